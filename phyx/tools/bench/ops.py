"""Op benchmarks on the active backend: the device's measured ceilings (matmul peak, copy
bandwidth), attention TFLOP/s at the model shapes through every kernel (phyx's and, where the
backend offers them, the vendor kernels called directly), fused ops GB/s against eager, a
parity verdict per kernel, and the host-side dispatch overhead of the op layer."""
from __future__ import annotations

import torch

import phyx
import phyx.ops as ops
from phyx.errors import UnsupportedArgumentError
from phyx.ops import reference
from phyx.tools.bench.timing import host_call_us, peak_memory, randn, time_call

# name: (B, Sq, Skv, Nq, Nkv, D, causal, what)
ATTENTION_SHAPES = {
    "wan1.3b_480p81f": (1, 32760, 32760, 12, 12, 128, False,
                        "Wan2.1 1.3B self-attention, 480p 81 frames (21x30x52 tokens)"),
    "wan14b_480p81f": (1, 32760, 32760, 40, 40, 128, False,
                       "Wan2.1 14B self-attention, 480p 81 frames"),
    "wan14b_cross": (1, 32760, 512, 40, 40, 128, False, "Wan2.1 14B cross-attention to 512 text tokens"),
    "cosmos_predict2_2b_720p93f": (1, 84480, 84480, 16, 16, 128, False,
                                   "Cosmos-Predict2 2B self-attention, 720p 93 frames (24x44x80)"),
    "cosmos3_720p93f": (1, 21120, 21120, 32, 8, 128, False,
                        "Cosmos3 generation attention, 720p 93 frames (24x22x40), 32 q / 8 kv heads "
                        "(diffusers' default config; Nano may differ)"),
}
QUICK_ATTENTION_SHAPES = {
    "tiny_self": (1, 256, 256, 4, 4, 64, False, "tiny (--quick)"),
    "tiny_gqa_causal": (2, 200, 200, 8, 2, 64, True, "tiny GQA causal (--quick)"),
}

# name: (op, x shape, extra, what)
FUSED_SHAPES = {
    "rms_norm_wan14b_allheads": ("rms_norm", (1, 32760, 5120), None, "Wan 14B q/k RMSNorm over all heads"),
    "rms_norm_cosmos3_perhead": ("rms_norm", (1, 21120, 32, 128), None, "Cosmos3 per-head q norm"),
    "rope_adjacent_wan14b": ("rope", (1, 32760, 40, 128), "adjacent", "Wan 14B RoPE (adjacent pairs)"),
    "rope_half_cosmos_predict2": ("rope", (1, 84480, 16, 128), "half", "Cosmos-Predict2 RoPE (rotate-half)"),
    "modulate_wan14b": ("modulate", (1, 32760, 5120), None, "Wan 14B adaLN modulate, [1,1,C] shift/scale"),
    "gated_residual_wan14b": ("gated_residual", (1, 32760, 5120), None,
                              "Wan 14B residual: fp32 x + bf16 branch * fp32 [1,1,C] gate"),
    "norm_modulate_wan14b": ("norm_modulate", (1, 32760, 5120), None,
                             "Wan 14B adaLN: LayerNorm of the fp32 residual, fp32 [1,1,C] modulation, bf16 out"),
}
QUICK_FUSED_SHAPES = {
    "rms_norm_tiny": ("rms_norm", (1, 512, 256), None, "tiny (--quick)"),
    "rope_adjacent_tiny": ("rope", (1, 256, 4, 64), "adjacent", "tiny (--quick)"),
    "rope_half_tiny": ("rope", (1, 256, 4, 64), "half", "tiny (--quick)"),
    "modulate_tiny": ("modulate", (1, 512, 256), None, "tiny (--quick)"),
    "gated_residual_tiny": ("gated_residual", (1, 512, 256), None, "tiny (--quick)"),
    "norm_modulate_tiny": ("norm_modulate", (1, 512, 256), None, "tiny (--quick)"),
}


def attention_flops(B, Sq, Skv, N, D, causal=False):
    """Matmul FLOPs of one attention forward (QK^T and PV); causal counts half."""
    f = 4.0 * B * N * Sq * Skv * D
    return f / 2 if causal else f


def _dev():
    from phyx.device import torch_device

    return torch_device()


# ------------------------------------------------------------------ ceilings
def device_peaks(quick: bool = False, log=print) -> dict:
    dev = _dev()
    n = 1024 if quick else 8192
    dt = torch.bfloat16 if dev.type != "cpu" or quick else torch.float32
    a, b = randn((n, n), dt, dev, 1), randn((n, n), dt, dev, 2)
    t = time_call(lambda: a @ b, warmup=3, iters=10)  # noqa: F821
    mm = 2.0 * n ** 3 / (t["median_ms"] * 1e-3) / 1e12
    size = (16 if quick else 1024) * 1024 * 1024  # bytes per buffer
    src = randn((size // 2,), torch.bfloat16, dev, 3)
    dst = torch.empty_like(src)
    t2 = time_call(lambda: dst.copy_(src), warmup=3, iters=20)  # noqa: F821
    copy = 2.0 * size / (t2["median_ms"] * 1e-3) / 1e9
    del a, b, src, dst
    out = {"matmul_tflops": mm, "matmul_shape": [n, n, n], "matmul_dtype": str(dt),
           "copy_gbps": copy, "copy_bytes_each_way": size,
           "note": "random data; copy counts bytes read plus bytes written"}
    log(f"peaks: matmul {mm:.1f} TFLOP/s ({n}^3 {dt}), copy {copy:.0f} GB/s")
    return out


# ------------------------------------------------------------------ parity
def _parity(fn, args_fn, dtype, ref_fn) -> dict:
    """Verdict of fn against the float64 reference on host-drawn inputs."""
    from phyx.tools.parity import metrics as M

    args = args_fn()
    try:
        got = fn(*args)
    except UnsupportedArgumentError as e:
        return {"verdict": "REFUSED", "reason": str(e)[:200]}
    want = ref_fn(*[a.double() if torch.is_tensor(a) and a.is_floating_point() else a for a in args])
    m = M.compare(got.float().cpu(), want.cpu())
    status, why = M.verdict(m, M.threshold_for(dtype))
    return {"verdict": status, "rel_l2": m.rel_l2, "reason": why}


# ------------------------------------------------------------------ attention
def _direct_attention_calls(q, k, v, causal):
    return phyx.get_backend().bench_direct_attention(q, k, v, causal)


def bench_attention(shapes: dict, dtype=torch.bfloat16, iters: int = 5, log=print) -> list[dict]:
    dev = _dev()
    recs = []
    for name, (B, Sq, Skv, Nq, Nkv, D, causal, what) in shapes.items():
        flops = attention_flops(B, Sq, Skv, Nq, D, causal)
        q = randn((B, Sq, Nq, D), dtype, dev, 10)
        k = randn((B, Skv, Nkv, D), dtype, dev, 11)
        v = randn((B, Skv, Nkv, D), dtype, dev, 12)
        shape = {"B": B, "Sq": Sq, "Skv": Skv, "Nq": Nq, "Nkv": Nkv, "D": D, "causal": causal,
                 "dtype": str(dtype).replace("torch.", "")}
        ps = min(Sq, 1024), min(Skv, 1024)

        def pargs(B=B, Nq=Nq, Nkv=Nkv, D=D, ps=ps):
            return (randn((B, ps[0], Nq, D), dtype, dev, 20, host=True),
                    randn((B, ps[1], Nkv, D), dtype, dev, 21, host=True),
                    randn((B, ps[1], Nkv, D), dtype, dev, 22, host=True))

        def ref(q_, k_, v_, causal=causal):
            return reference.attention(q_, k_, v_, is_causal=causal)

        cands = {"phyx.ops.attention": (lambda q_, k_, v_, c=causal: ops.attention(q_, k_, v_, is_causal=c),
                                        "phyx")}
        for kern in ops.available_kernels("attention"):
            if kern.name == "reference":
                continue
            cands[f"phyx:{kern.name}"] = (
                lambda q_, k_, v_, f=kern.fn, c=causal: f(q_, k_, v_, None, None, None, c, None, False),
                "phyx-kernel")
        for dname, fn in _direct_attention_calls(q, k, v, causal).items():
            cands[f"direct:{dname}"] = (fn, "direct")
        for cname, (fn, kind) in cands.items():
            rec = {"section": "attention", "case": name, "what": what, "kernel": cname, "kind": kind,
                   "shape": shape, "flops": flops}
            try:
                if kind == "direct":
                    run = fn  # closes over q, k, v (vendor layout prepared outside the timing)
                else:
                    def run(fn=fn):
                        return fn(q, k, v)  # noqa: F821
                t = time_call(run, warmup=2, iters=iters, min_ms=150)
                rec.update(ms=t["median_ms"], min_ms=t["min_ms"], tflops=flops / (t["median_ms"] * 1e-3) / 1e12)
                rec["peak_mem_mb"] = (lambda p: None if p is None else p / 2**20)(peak_memory(run))
                if kind != "direct":
                    rec["parity"] = _parity(fn, pargs, dtype, ref)
            except UnsupportedArgumentError as e:
                rec.update(error="refused: " + str(e)[:300])
            except Exception as e:  # one kernel's failure must not lose the others' numbers
                rec.update(error=f"{type(e).__name__}: {str(e)[:300]}")
            recs.append(rec)
            log(_fmt(rec))
        _summarise_attention(recs, name, log)
        _head_to_head(recs, name, cands, q, k, v, log)
        del q, k, v
    return recs


def _head_to_head(recs, case, cands, q, k, v, log, rounds=5):
    """phyx.ops.attention against the fastest kernel of the sweep, timed in alternating rounds
    so clock and thermal drift hit both alike (the 3% target is below run-to-run noise)."""
    rows = [r for r in recs if r["case"] == case and "ms" in r]
    phyx_rec = next((r for r in rows if r["kernel"] == "phyx.ops.attention"), None)
    others = [r for r in rows if r["kind"] in ("direct", "phyx-kernel")]
    if phyx_rec is None or not others:
        return
    best = min(others, key=lambda r: r["ms"])
    fns = {}
    for label, rec in (("phyx", phyx_rec), ("best", best)):
        fn, kind = cands[rec["kernel"]]
        fns[label] = fn if kind == "direct" else (lambda fn=fn: fn(q, k, v))
    meds = {"phyx": [], "best": []}
    for _ in range(rounds):
        for label in ("phyx", "best"):
            meds[label].append(time_call(fns[label], warmup=1, iters=5, min_ms=100)["median_ms"])
    import statistics

    a, b = statistics.median(meds["phyx"]), statistics.median(meds["best"])
    phyx_rec["head_to_head"] = {"against": best["kernel"], "phyx_ms": a, "other_ms": b,
                                "ratio": a / b, "rounds": rounds, "target": 1.03}
    log(f"  => {case}: head-to-head phyx.ops.attention {a:.3f} ms vs {best['kernel']} {b:.3f} ms: "
        f"ratio {a / b:.3f} (target <= 1.03)")


def _summarise_attention(recs, case, log):
    rows = [r for r in recs if r["case"] == case and "ms" in r]
    direct = [r for r in rows if r["kind"] in ("direct", "phyx-kernel")]
    phyx_rec = next((r for r in rows if r["kernel"] == "phyx.ops.attention"), None)
    if not direct or phyx_rec is None:
        return
    best = min(direct, key=lambda r: r["ms"])
    best_direct = min((r for r in rows if r["kind"] == "direct"), key=lambda r: r["ms"], default=None)
    phyx_rec["fastest_kernel"] = best["kernel"]
    phyx_rec["vs_fastest"] = phyx_rec["ms"] / best["ms"]
    if best_direct:
        phyx_rec["fastest_direct"] = best_direct["kernel"]
        phyx_rec["vs_fastest_direct"] = phyx_rec["ms"] / best_direct["ms"]
    log(f"  => {case}: phyx.ops.attention {phyx_rec['ms']:.3f} ms; fastest {best['kernel']} "
        f"{best['ms']:.3f} ms; phyx/fastest = {phyx_rec['vs_fastest']:.3f}")


# ------------------------------------------------------------------ fused elementwise / norm ops
def _fused_inputs(op, shape, extra, dtype, dev, host=False, seed=30):
    x = randn(shape, dtype, dev, seed, host)
    if op == "rms_norm":
        return (x, randn((shape[-1],), dtype, dev, seed + 1, host), 1e-6), x.numel() * 2 * x.element_size()
    if op == "rope":
        S, D = shape[1], shape[-1]
        ang = randn((S, D // 2), torch.float32, dev, seed + 1, host) * 10
        cos, sin = ang.cos(), ang.sin()
        return (x, cos, sin, extra), x.numel() * 2 * x.element_size() + 2 * cos.numel() * 4
    if op == "modulate":
        mshape = (shape[0], 1, shape[-1])
        return ((x, randn(mshape, dtype, dev, seed + 1, host), randn(mshape, dtype, dev, seed + 2, host)),
                x.numel() * 2 * x.element_size())
    if op == "gated_residual":  # Wan's mix: fp32 residual stream, branch in dtype, fp32 gate
        xf = x.float()
        gate = randn((shape[0], 1, shape[-1]), torch.float32, dev, seed + 2, host)
        return (xf, randn(shape, dtype, dev, seed + 1, host), gate), x.numel() * (4 + 4 + x.element_size())
    if op == "norm_modulate":  # Wan's adaLN: fp32 residual and modulation in, dtype out
        mshape = (shape[0], 1, shape[-1])
        args = (x.float(), randn(mshape, torch.float32, dev, seed + 1, host),
                randn(mshape, torch.float32, dev, seed + 2, host) * 0.1, 1e-6, dtype)
        return args, x.numel() * (4 + x.element_size())
    raise ValueError(op)


def bench_fused(shapes: dict, dtype=torch.bfloat16, iters: int = 20, copy_gbps: float | None = None,
                log=print) -> list[dict]:
    dev = _dev()
    recs = []
    b = phyx.get_backend()
    for name, (op, shape, extra, what) in shapes.items():
        args, nbytes = _fused_inputs(op, shape, extra, dtype, dev)
        cands = {"eager": getattr(reference, op), "phyx.ops": getattr(ops, op)}
        for kern in ops.available_kernels(op):
            if kern.name != "reference":
                cands[f"phyx:{kern.name}"] = kern.fn
        for kern in b.bench_candidate_kernels(op):
            cands.setdefault(f"phyx:{kern.name}", kern.fn)
        eager_ms = None
        for cname, fn in cands.items():
            rec = {"section": "fused", "case": name, "op": op, "what": what, "kernel": cname,
                   "shape": list(shape), "dtype": str(dtype).replace("torch.", ""), "bytes": nbytes}
            try:
                t = time_call(lambda fn=fn: fn(*args), warmup=3, iters=iters)  # noqa: F821
                rec.update(ms=t["median_ms"], gbps=nbytes / (t["median_ms"] * 1e-3) / 1e9)
                if copy_gbps:
                    rec["of_copy_bw"] = rec["gbps"] / copy_gbps
                rec["peak_mem_mb"] = (lambda p: None if p is None else p / 2**20)(
                    peak_memory(lambda fn=fn: fn(*args)))  # noqa: F821
                small = tuple(min(s, 64) for s in shape[:-2]) + tuple(shape[-2:])
                rec["parity"] = _parity(fn, lambda: _fused_inputs(op, small, extra, dtype, dev, True)[0],
                                        dtype, getattr(reference, op))
                if cname == "eager":
                    eager_ms = rec["ms"]
                elif eager_ms:
                    rec["speedup_vs_eager"] = eager_ms / rec["ms"]
            except Exception as e:  # noqa: BLE001
                rec.update(error=f"{type(e).__name__}: {str(e)[:300]}")
            recs.append(rec)
            log(_fmt(rec))
        del args
    return recs


# ------------------------------------------------------------------ dispatch overhead
def bench_dispatch(log=print) -> dict:
    """Host microseconds per call of phyx.ops over calling torch directly, at tiny sizes where
    the op itself is cheapest (the overhead is what is left)."""
    import torch.nn.functional as F

    dev = _dev()
    q = randn((1, 8, 2, 16), torch.float32, dev, 1)
    x = randn((4, 32), torch.float32, dev, 2)
    w = randn((32,), torch.float32, dev, 3)
    kern = ops.chosen_kernel("attention")

    def torch_attn():
        return F.scaled_dot_product_attention(q.transpose(1, 2), q.transpose(1, 2),
                                              q.transpose(1, 2)).transpose(1, 2)

    calls = [("attention.torch_direct", torch_attn),
             (f"attention.kernel_direct[{kern.name}]",
              lambda: kern.fn(q, q, q, None, None, None, False, None, False)),
             ("attention.phyx_ops", lambda: ops.attention(q, q, q)),
             ("rms_norm.torch_direct", lambda: reference.rms_norm(x, w, 1e-6)),
             ("rms_norm.phyx_ops", lambda: ops.rms_norm(x, w, 1e-6))]
    # interleaved rounds, best of each, one intra-op thread: the overhead is a difference of
    # two small times, so both must see the same machine state
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = {label: float("inf") for label, _ in calls}
        for _ in range(9):
            for label, fn in calls:
                res[label] = min(res[label], host_call_us(fn, number=1000, repeat=1))
    finally:
        torch.set_num_threads(threads)
    res["attention.overhead_us"] = res["attention.phyx_ops"] - res["attention.torch_direct"]
    res["attention.op_layer_overhead_us"] = (res["attention.phyx_ops"]
                                            - res[f"attention.kernel_direct[{kern.name}]"])
    res["rms_norm.overhead_us"] = res["rms_norm.phyx_ops"] - res["rms_norm.torch_direct"]
    res["target_us"] = 2.0
    res["attention_kernel"] = kern.name
    res["rms_norm_kernel"] = ops.chosen_kernel("rms_norm").name
    res["note"] = ("host time per call, best of 7 x 2000 calls; on an accelerator the op is "
                   "asynchronous, so this is launch-side time")
    log("dispatch: " + ", ".join(f"{k}={v:.2f}" for k, v in res.items() if isinstance(v, float)))
    return res


def _fmt(rec) -> str:
    if "error" in rec:
        return f"  {rec['case']:<28} {rec['kernel']:<34} {rec['error'][:90]}"
    rate = f"{rec['tflops']:7.1f} TFLOP/s" if "tflops" in rec else f"{rec['gbps']:7.0f} GB/s"
    par = rec.get("parity", {}).get("verdict", "")
    mem = rec.get("peak_mem_mb")
    mem_s = f"{mem:8.0f} MiB" if mem is not None else ""
    return f"  {rec['case']:<28} {rec['kernel']:<34} {rec['ms']:9.3f} ms {rate} {mem_s} {par}"


def run_ops(quick: bool = False, sections=("peaks", "attention", "fused", "dispatch"),
            attention_shapes=None, log=print) -> dict:
    from phyx.tools.bench.env import machine_meta

    out = {"kind": "phyx-bench-ops", "schema": 1, "meta": machine_meta(), "quick": quick}
    copy_gbps = None
    if "peaks" in sections:
        out["peaks"] = device_peaks(quick, log)
        copy_gbps = out["peaks"]["copy_gbps"]
    if "attention" in sections:
        shapes = QUICK_ATTENTION_SHAPES if quick else ATTENTION_SHAPES
        if attention_shapes:
            shapes = {k: v for k, v in {**ATTENTION_SHAPES, **QUICK_ATTENTION_SHAPES}.items()
                      if k in attention_shapes}
        out["attention"] = bench_attention(shapes, iters=3 if quick else 5, log=log)
    if "fused" in sections:
        out["fused"] = bench_fused(QUICK_FUSED_SHAPES if quick else FUSED_SHAPES,
                                   iters=5 if quick else 20, copy_gbps=copy_gbps, log=log)
    if "dispatch" in sections:
        out["dispatch"] = bench_dispatch(log)
    return out


__all__ = ["run_ops", "device_peaks", "bench_attention", "bench_fused", "bench_dispatch",
           "attention_flops", "ATTENTION_SHAPES", "FUSED_SHAPES"]
