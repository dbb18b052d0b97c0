"""Optional profiler around a benchmark run (`--profile DIR`): the active backend's
`profiler(out_dir)` hook (torch_npu's profiler on the NPU, what Ascend's tools read; torch.profiler
elsewhere). Off unless asked: a profiler changes the timings it records."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def maybe_profile(out_dir: str | None):
    if not out_dir:
        yield None
        return
    import phyx

    with phyx.get_backend().profiler(out_dir) as p:
        yield p


# Kernel-name patterns per category, first match wins. CUDA kernel names (cuBLAS / CUTLASS / cuDNN
# / Triton / ATen) and, on the CPU, aten op names. Order matters: attention kernels also match
# generic words like "kernel", Triton kernels are named after the phyx function they implement.
_CATEGORIES = (
    ("attention", ("fmha", "flash", "attention", "sdpa", "cudnn_generated", "sm90_fprop", "mha")),
    ("matmul", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "matmul", "addmm", "mm", "linear",
                "conv", "bmm")),
    ("norm", ("norm", "rsqrt")),
    ("reduction", ("reduce", "sum", "mean")),
    ("copy/cast", ("copy", "cat", "memcpy", "memset", "to_copy", "fill", "index", "clone")),
    ("elementwise", ("elementwise", "vectorized", "unrolled", "mul", "add", "gelu", "silu", "erf",
                     "tanh", "sin", "cos", "neg", "div", "pow", "sub", "where")),
)


def categorise(name: str) -> str:
    low = name.lower()
    if not any(w in low for w in _CATEGORIES[0][1]) and _is_triton(name):
        return "triton"
    for cat, words in _CATEGORIES:
        if any(w in low for w in words):
            return cat
    return "other"


def _is_triton(name: str) -> bool:
    # Triton kernels carry the bare name of their @triton.jit function ("_rope_kernel",
    # "triton_poi_fused_..."); ATen and vendor kernels are C++ ("void at::native::...").
    return name.startswith("triton") or (name.startswith("_") and "::" not in name and " " not in name)


def kernel_breakdown(step, top: int = 15) -> dict:
    """Profile one call of step() and return where its device time went: milliseconds per
    category (matmul, attention, triton, norm, elementwise, ...) and the top kernels. On a GPU
    this counts kernel time; on the CPU, the self time of the aten ops."""
    import torch.profiler as tp

    import phyx

    backend = phyx.get_backend()
    dev = backend.device
    activity = backend.kernel_profiler_activity   # e.g. 'CUDA'; None: count host aten ops
    on_device = activity is not None
    acts = [tp.ProfilerActivity.CPU] + ([getattr(tp.ProfilerActivity, activity)] if on_device else [])
    dev.synchronize()
    with tp.profile(activities=acts) as prof:
        step()
        dev.synchronize()
    rows = []
    for ev in prof.key_averages():
        if on_device:
            if ev.device_type != getattr(torch.autograd.DeviceType, activity):
                continue
            us = ev.self_device_time_total
        else:
            if not ev.key.startswith("aten::") or ev.key in _CPU_WRAPPERS:
                continue
            us = ev.self_cpu_time_total
        if us > 0:
            rows.append((ev.key, us / 1e3, ev.count))
    rows.sort(key=lambda r: -r[1])
    per_cat: dict[str, float] = {}
    for name, ms, _ in rows:
        cat = categorise(name)
        per_cat[cat] = per_cat.get(cat, 0.0) + ms
    total = sum(per_cat.values())
    return {"source": f"{activity.lower()} kernels" if on_device else "cpu aten self time",
            "total_ms": total,
            "ms_per_category": dict(sorted(per_cat.items(), key=lambda kv: -kv[1])),
            "top": [{"name": n[:120], "ms": ms, "calls": c, "category": categorise(n)}
                    for n, ms, c in rows[:top]]}


# aten ops that only call other aten ops: their self time is dispatch, not work
_CPU_WRAPPERS = frozenset({"aten::empty", "aten::empty_strided", "aten::view", "aten::reshape",
                           "aten::as_strided", "aten::expand", "aten::transpose", "aten::t",
                           "aten::permute", "aten::unsqueeze", "aten::squeeze", "aten::select",
                           "aten::slice", "aten::detach", "aten::alias", "aten::unbind",
                           "aten::split", "aten::chunk", "aten::flatten", "aten::unflatten",
                           "aten::lift_fresh", "aten::resolve_conj", "aten::resolve_neg"})
