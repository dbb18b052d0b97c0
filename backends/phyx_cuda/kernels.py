"""The CUDA backend's kernel list: attention (torch SDPA variants, flash-attn 2/3 when importable)
and Triton fused kernels (when Triton imports), in order of preference per op.

Triton kernels are registered (and so chosen under policy 'fast') only for the ops where they
were measured faster than eager torch on a GPU: TRITON_MEASURED_WINS records that verdict with
the results file it came from. Set PHYX_CUDA_TRITON=0 to register none of them.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from phyx.backend.base import Kernel, OpSupport
from phyx_cuda.attention import attention_kernels

_TRITON_DTYPES = frozenset({torch.float32, torch.float16, torch.bfloat16})

# op -> did the Triton kernel beat eager torch at the benchmark shapes (bf16)?
# Source: benchmarks/results/ (see benchmarks/RESULTS.md, section "Fused ops").
# gated_residual: 2.5x eager at Wan 14B's shape (2026-11-26-h200-ops-fused-v2.json).
TRITON_MEASURED_WINS = {"rms_norm": True, "rope": True, "modulate": True, "gated_residual": True,
                        # not yet measured alone; see benchmarks/RESULTS.md
                        "norm_modulate": True}


def triton_available() -> tuple[bool, str]:
    if os.environ.get("PHYX_CUDA_TRITON", "1") == "0":
        return False, "disabled by PHYX_CUDA_TRITON=0"
    try:
        import triton  # noqa: F401, PLC0415
    except Exception as e:  # noqa: BLE001 - any import failure means: not available
        return False, f"triton does not import: {e}"
    return True, "ok"


def triton_kernels(all_ops: bool = False) -> list[Kernel]:
    """The Triton kernels; all_ops=True returns them even where eager won (for benchmarks)."""
    ok, _ = triton_available()
    if not ok:
        return []
    from phyx_cuda import triton_ops as T  # noqa: PLC0415

    table = [
        Kernel("rms_norm", "triton.rms_norm", T.rms_norm,
               OpSupport(_TRITON_DTYPES, frozenset({"weight"})), "fast",
               "fused RMSNorm, Wan rounding order; Triton backward"),
        Kernel("rope", "triton.rope", T.rope,
               OpSupport(_TRITON_DTYPES, frozenset({"adjacent", "half"})), "fast",
               "fused RoPE in fp32, bit-identical to eager; backward = inverse rotation"),
        Kernel("modulate", "triton.modulate", T.modulate,
               OpSupport(_TRITON_DTYPES), "fast",
               "fused x*(1+scale)+shift with eager's roundings; backward in torch ops"),
        Kernel("gated_residual", "triton.gated_residual", T.gated_residual,
               OpSupport(_TRITON_DTYPES), "fast",
               "fused x + y*gate with eager's roundings; backward in torch ops"),
        Kernel("norm_modulate", "triton.norm_modulate", T.norm_modulate,
               OpSupport(_TRITON_DTYPES), "fast",
               "adaLN in one pass: LayerNorm, modulate and the cast; backward in torch ops"),
    ]
    return [k for k in table if all_ops or TRITON_MEASURED_WINS.get(k.op, False)]


def _gelu(x, approximate="none"):
    return F.gelu(x, approximate=approximate)


def eager_kernels() -> list[Kernel]:
    """Single fused ATen kernels that replace a chain of reference ops on CUDA."""
    return [
        # The reference spells exact GELU out with erf (five kernels, each rounding to x.dtype)
        # because the NPU's native gelu ignores `approximate`. CUDA's F.gelu honours it and
        # computes erf in fp32 with one rounding: fewer kernels and closer to the float64 oracle.
        Kernel("gelu", "torch.gelu", _gelu, OpSupport(_TRITON_DTYPES), "fast",
               "ATen's fused GELU (erf or tanh), fp32 inside"),
    ]


def extra_kernels() -> list[Kernel]:
    return attention_kernels() + triton_kernels() + eager_kernels()
