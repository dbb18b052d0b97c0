"""CUDA attention kernels in phyx's B S N D contract: torch SDPA (and its pinned backends),
flash-attn 2 / 3 and FlashAttention-4 when installed.

Only the cores live here. The contract every kernel shares (argument checks against its
OpSupport, kv_lens slicing, dead rows, q_lens) is phyx.kernels.attention_adapter, which
`make_kernel` puts around each core; a core only sees q/k/v [B, S, N, D], an optional mask,
is_causal, scale, return_lse.
"""
from __future__ import annotations

import importlib.util
import inspect
import os
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from phyx.backend.base import Kernel, OpSupport
from phyx.errors import BackendUnavailableError, UnsupportedArgumentError
from phyx.kernels.attention_adapter import contract_attention, fold_causal
from phyx.kernels.spec import ATTENTION_FEATURES

HALF = frozenset({torch.float16, torch.bfloat16})
FLOATS = frozenset({torch.float32, torch.float16, torch.bfloat16})
NO_MASK = ATTENTION_FEATURES - {"bool_mask", "additive_mask"}


# --------------------------------------------------------------------------- the contract
def make_kernel(name, support, core, doc=""):
    """A phyx attention kernel: the shared contract adapter (phyx.kernels.attention_adapter)
    around a CUDA core."""
    return Kernel("attention", name, contract_attention(core, support, name), support, "fast", doc)


# --------------------------------------------------------------------------- torch SDPA
def _bnsd(t):
    t = t.transpose(1, 2)
    return t if t.stride(-1) == 1 else t.contiguous()


def _sdpa_out(q, k, v, mask, is_causal, scale):
    if mask is not None and is_causal:
        mask, is_causal = fold_causal(mask, q.shape[1], k.shape[1]), False
    if mask is not None and mask.dtype != torch.bool and mask.dtype != q.dtype:
        mask = mask.to(q.dtype)
    out = F.scaled_dot_product_attention(_bnsd(q), _bnsd(k), _bnsd(v), attn_mask=mask,
                                         is_causal=is_causal, scale=scale,
                                         enable_gqa=q.shape[2] != k.shape[2])
    return out.transpose(1, 2)


def _expand_kv(q, t):
    """GQA for kernels without it: repeat each KV head over its query group (a copy)."""
    rep = q.shape[2] // t.shape[2]
    return t if rep == 1 else t.repeat_interleave(rep, dim=2)


def _flash_lse(q, k, v, is_causal, scale):
    """aten's flash kernel: output and natural-log lse [B, N, Sq] float32. No mask."""
    k, v = _expand_kv(q, k), _expand_kv(q, v)
    res = torch.ops.aten._scaled_dot_product_flash_attention(
        _bnsd(q), _bnsd(k), _bnsd(v), 0.0, is_causal, False, scale=scale)
    return res[0].transpose(1, 2), res[1]


def _mem_eff_bias(mask, q, k):
    """An additive bias the memory-efficient kernel accepts: q.dtype, 4-D, row stride aligned to
    16 elements (padded then sliced, as torch's own SDPA does), broadcast by stride 0."""
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
    else:
        mask = mask.to(q.dtype)
    if mask.dim() < 4:
        mask = mask.view((1,) * (4 - mask.dim()) + tuple(mask.shape))
    sk = k.shape[1]
    if mask.shape[-1] != sk:
        mask = mask.expand(*mask.shape[:-1], sk)
    if any(s % 16 for s in mask.stride()[:-1]) or mask.stride(-1) != 1:
        padded = F.pad(mask, (0, (-sk) % 16 or 16))
        mask = padded[..., :sk]
    return mask.expand(q.shape[0], q.shape[2], q.shape[1], sk)


def _efficient_lse(q, k, v, mask, is_causal, scale):
    """aten's memory-efficient kernel with compute_log_sumexp: takes an additive bias and
    top-left causal. Its lse is padded to a multiple of 32 queries: sliced back."""
    if mask is not None and is_causal:
        mask, is_causal = fold_causal(mask, q.shape[1], k.shape[1]), False
    bias = _mem_eff_bias(mask, q, k) if mask is not None else None
    k, v = _expand_kv(q, k), _expand_kv(q, v)
    res = torch.ops.aten._scaled_dot_product_efficient_attention(
        _bnsd(q), _bnsd(k), _bnsd(v), bias, True, 0.0, is_causal, scale=scale)
    return res[0].transpose(1, 2), res[1][..., :q.shape[1]]


def _flash_ok(q, k, mask, is_causal):
    D = q.shape[-1]
    return (mask is None and q.dtype in HALF and D % 8 == 0 and D <= 256
            and not (is_causal and q.shape[1] != k.shape[1]))


def sdpa_auto(q, k, v, mask, is_causal, scale, return_lse):
    """torch picks cuDNN / flash / efficient; with lse, flash where it can, else efficient."""
    if not return_lse:
        return _sdpa_out(q, k, v, mask, is_causal, scale)
    if _flash_ok(q, k, mask, is_causal):
        return _flash_lse(q, k, v, is_causal, scale)
    return _efficient_lse(q, k, v, mask, is_causal, scale)


_PINNED = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
           "efficient": SDPBackend.EFFICIENT_ATTENTION}


def sdpa_pinned(which):
    backend = _PINNED[which]

    def core(q, k, v, mask, is_causal, scale, return_lse):
        if return_lse:
            if which == "flash":
                if is_causal and q.shape[1] != k.shape[1]:
                    raise UnsupportedArgumentError(
                        "sdpa.flash cannot do top-left causal with Sq != Skv; use 'sdpa' or "
                        "'sdpa.efficient'")
                return _flash_lse(q, k, v, is_causal, scale)
            return _efficient_lse(q, k, v, mask, is_causal, scale)
        if which == "efficient" and q.shape[2] != k.shape[2]:
            k, v = _expand_kv(q, k), _expand_kv(q, v)  # its kernel takes equal head counts only
        try:
            with sdpa_kernel(backend):
                return _sdpa_out(q, k, v, mask, is_causal, scale)
        except RuntimeError as e:
            if "No available kernel" not in str(e):
                raise
            raise UnsupportedArgumentError(
                f"torch's {which} SDPA backend cannot run these inputs (dtype {q.dtype}, "
                f"head dim {q.shape[-1]}, mask {None if mask is None else mask.dtype}, "
                f"causal={is_causal}, Sq={q.shape[1]}, Skv={k.shape[1]}); use kernel 'sdpa' "
                f"(torch picks a backend) or policy 'reference'. torch said: {e}") from e
    return core


# --------------------------------------------------------------------------- flash-attn 2 / 3
def _flash_attn_core(fn, label, lse_kw):
    """flash-attn takes B S N D and GQA natively; its causal is bottom-right aligned, which
    equals SDPA's top-left only when Sq == Skv, so other shapes are refused."""
    def core(q, k, v, mask, is_causal, scale, return_lse):
        if is_causal and q.shape[1] != k.shape[1]:
            raise UnsupportedArgumentError(
                f"{label} aligns causal bottom-right; phyx's is_causal is top-left (as SDPA). "
                f"With Sq={q.shape[1]} != Skv={k.shape[1]} use kernel 'sdpa'.")
        kwargs = {"softmax_scale": scale, "causal": is_causal}
        if return_lse and lse_kw:
            kwargs[lse_kw] = True
        res = fn(q, k, v, **kwargs)
        if isinstance(res, tuple):
            return (res[0], res[1].float()) if return_lse else res[0]
        if return_lse:
            raise UnsupportedArgumentError(f"{label} did not return the log-sum-exp here")
        return res
    return core


def flash_attn_kernels():
    ks = []
    support = OpSupport(HALF, NO_MASK)
    try:
        from flash_attn import flash_attn_func as fa2  # noqa: PLC0415
    except Exception:  # not installed or built for another torch: not registered
        fa2 = None
    if fa2 is not None:
        ks.append(make_kernel("flash_attn2", support,
                              _flash_attn_core(fa2, "flash-attn 2", "return_attn_probs"),
                              "flash-attn 2 flash_attn_func (B S N D, native GQA)"))
    try:
        from flash_attn_interface import flash_attn_func as fa3  # noqa: PLC0415
    except Exception:
        fa3 = None
    if fa3 is not None:
        params = inspect.signature(fa3).parameters
        lse_kw = "return_attn_probs" if "return_attn_probs" in params else None
        ks.append(make_kernel("flash_attn3", support, _flash_attn_core(fa3, "flash-attn 3", lse_kw),
                              "flash-attn 3 (Hopper) flash_attn_interface.flash_attn_func"))
    return ks


# --------------------------------------------------------------------------- flash-attn 4 (CuTe DSL)
# GPU architectures (major, minor) on which FlashAttention-4 was measured faster than torch SDPA
# (cuDNN, torch's choice there) at every self-attention shape of phyx.tools.bench, forward and fwd+bwd,
# with errors against the float64 reference no larger than SDPA's. Only there does policy 'fast'
# prefer it. H200 (sm90), 2026-11-26: forward 1.07-1.24x, forward+backward 1.11-1.17x
# (benchmarks/results/2026-11-26-h200-fa4-probe.log); the H100 (also sm90) model steps with it are
# in benchmarks/results/2026-11-26-h100-models-fa4-*.json.
FA4_MEASURED_FASTER = {(9, 0): "benchmarks/results/2026-11-26-h200-fa4-probe.log"}
FA4_DOC = "FlashAttention-4 (flash-attn-4, CuTe DSL) flash_attn.cute.flash_attn_func (B S N D, native GQA)"

# CuTe DSL warns once per compiled kernel that FA4's AuxData argument is not a JIT argument; the
# value is a compile-time constant there, so the warning says nothing to a phyx user.
warnings.filterwarnings("ignore", message=r"Argument aux_data .* cannot be converted to a JitArgument")


def fa4_installed() -> bool:
    """flash-attn-4 is installed (not imported: its compiler loads ~200 MB on first use)."""
    if os.environ.get("PHYX_CUDA_FA4", "1") == "0":
        return False
    try:
        return importlib.util.find_spec("flash_attn.cute") is not None
    except Exception:  # noqa: BLE001 - find_spec imports the parent package, which may be broken
        return False


_FA4_FN = {}


def _fa4_import():
    """flash_attn_func, imported on first use and hidden from torch.compile (a graph break: its
    CuTe kernels are not traceable)."""
    if "fn" not in _FA4_FN:
        try:
            from flash_attn.cute import flash_attn_func  # noqa: PLC0415
        except Exception as e:  # noqa: BLE001
            raise BackendUnavailableError(
                f"flash-attn-4 is installed but does not import ({type(e).__name__}: {e}). "
                f"Reinstall it (pip install 'phyx[fa4]') or set PHYX_CUDA_FA4=0 to use torch SDPA.") from e
        _FA4_FN["fn"] = torch.compiler.disable(flash_attn_func)
    return _FA4_FN["fn"]


def _fa4_refusal(q, k, v, is_causal) -> str | None:
    """Why FA4 cannot take these inputs (None: it can). Masks and dtypes are the wrapper's check."""
    D, Dv = q.shape[-1], v.shape[-1]
    if not (8 <= D <= 256 and 8 <= Dv <= 256 and D % 8 == 0 and Dv % 8 == 0):
        return f"takes head dims 8..256 in steps of 8, got {D} / {Dv}"
    if is_causal and q.shape[1] != k.shape[1]:
        return (f"aligns causal bottom-right; phyx's is_causal is top-left (as SDPA), which differs "
                f"with Sq={q.shape[1]} != Skv={k.shape[1]}")
    if not (q.dtype == k.dtype == v.dtype):
        return f"needs one dtype for q, k, v, got {q.dtype}, {k.dtype}, {v.dtype}"
    return None


# Below this many keys FA4 lost to SDPA (cuDNN): 0.81 vs 0.61 ms for Wan 14B's cross-attention
# (32760 queries, 512 text keys) on the H200; it won at every self-attention shape (21120-84480
# keys). The SDPA-backed kernel sends shorter key sequences to SDPA. Not tuned between the two.
FA4_MIN_KEYS = 4096


def fa4_core(flash_attn_func=None, fallback=None):
    """FA4 on what it can take; the rest goes to `fallback` (a core) or is refused. With a
    fallback, key sequences shorter than FA4_MIN_KEYS go to the fallback too."""
    def core(q, k, v, mask, is_causal, scale, return_lse):
        why = None if mask is None and q.dtype in HALF else "takes no mask and only fp16 / bf16"
        why = why or _fa4_refusal(q, k, v, is_causal)
        if fallback is not None and k.shape[1] < FA4_MIN_KEYS:
            why = why or "is slower than SDPA on short key sequences"
        if why is not None:
            if fallback is not None:
                return fallback(q, k, v, mask, is_causal, scale, return_lse)
            raise UnsupportedArgumentError(f"flash-attn 4 {why}; use kernel 'sdpa'.")
        fn = flash_attn_func or _fa4_import()
        out, lse = fn(q, k, v, softmax_scale=scale, causal=is_causal, return_lse=return_lse)
        return (out, lse.float()) if return_lse else out
    return core


def flash_attn4_kernels(flash_attn_func=None, capability=None) -> tuple[list, list]:
    """(kernels to put first, kernels to append). 'flash_attn4' is FA4 alone (refuses what it
    cannot run); 'flash_attn4_or_sdpa' runs FA4 where it can and torch SDPA for the rest, and
    leads the list (policy 'fast') only on an architecture in FA4_MEASURED_FASTER."""
    if flash_attn_func is None and not fa4_installed():
        return [], []
    if capability is None:
        capability = tuple(torch.cuda.get_device_capability())
    strict = make_kernel("flash_attn4", OpSupport(HALF, NO_MASK), fa4_core(flash_attn_func), FA4_DOC)
    auto = make_kernel("flash_attn4_or_sdpa", OpSupport(FLOATS, ATTENTION_FEATURES),
                       fa4_core(flash_attn_func, fallback=sdpa_auto),
                       FA4_DOC + " where it applies (fp16/bf16, no mask, head dim <= 256, causal "
                       "only with Sq == Skv); torch SDPA ('sdpa') otherwise")
    if tuple(capability) in FA4_MEASURED_FASTER:
        return [auto], [strict]
    return [], [auto, strict]


# --------------------------------------------------------------------------- registry
def attention_kernels():
    """In order of preference: the first is what policy 'fast' uses."""
    first, last = flash_attn4_kernels()
    return first + [
        make_kernel("sdpa", OpSupport(FLOATS, ATTENTION_FEATURES), sdpa_auto,
                    "torch SDPA, torch picks cuDNN / flash / efficient; lse through aten's flash "
                    "or memory-efficient kernel"),
        make_kernel("sdpa.cudnn", OpSupport(HALF, ATTENTION_FEATURES - {"lse"}),
                    sdpa_pinned("cudnn"), "torch SDPA pinned to cuDNN attention"),
        make_kernel("sdpa.flash", OpSupport(HALF, NO_MASK), sdpa_pinned("flash"),
                    "torch SDPA pinned to its flash-attention 2 kernel"),
        make_kernel("sdpa.efficient", OpSupport(FLOATS, ATTENTION_FEATURES),
                    sdpa_pinned("efficient"), "torch SDPA pinned to the memory-efficient kernel"),
    ] + flash_attn_kernels() + last


def direct_calls(q, k, v, causal):
    """The vendor kernels called directly, without phyx (the benchmark's baseline). Inputs are
    put in each kernel's own layout here, outside the timed call."""
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    gqa = q.shape[2] != k.shape[2]
    calls = {}

    def sdpa(backend=None):
        def run():
            if backend is None:
                return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, enable_gqa=gqa)
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, enable_gqa=gqa)
        return run

    calls["torch.sdpa"] = sdpa()
    for name, backend in _PINNED.items():
        calls[f"torch.sdpa[{name}]"] = sdpa(backend)
    if not gqa:
        calls["aten._scaled_dot_product_flash_attention"] = (
            lambda: torch.ops.aten._scaled_dot_product_flash_attention(qt, kt, vt, 0.0, causal, False))
    for mod, label in (("flash_attn", "flash_attn2.flash_attn_func"),
                       ("flash_attn_interface", "flash_attn3.flash_attn_func")):
        try:
            fn = __import__(mod).flash_attn_func
        except Exception:  # noqa: BLE001 - not installed
            continue
        calls[label] = lambda fn=fn: fn(q, k, v, causal=causal)
    if fa4_installed():
        try:
            fa4 = _fa4_import()
        except BackendUnavailableError:
            return calls
        calls["flash_attn4.flash_attn_func"] = lambda: fa4(q, k, v, causal=causal)[0]
    return calls


__all__ = ["attention_kernels", "make_kernel", "direct_calls", "flash_attn4_kernels", "fa4_installed",
           "FA4_MEASURED_FASTER"]
