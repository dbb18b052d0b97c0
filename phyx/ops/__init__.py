"""phyx.ops: the op API model code calls. Each function validates the layout (cheaply) and
calls the kernel the active backend and policy chose. See phyx/ops/reference.py for the exact
semantics every kernel must match."""
from __future__ import annotations

import torch

from phyx.errors import LayoutError
from phyx.ops import reference, rope_tables
from phyx.ops._dispatch import (
    OP_NAMES,
    available_kernels,
    call_kernel,
    chosen_kernel,
    chosen_kernels,
    get_policy,
    kernel_override,
    observe,
    use_kernel,
)
from phyx.ops._dispatch import K as _K
from phyx.ops._dispatch import pinned as pinned_kernel

__all__ = ["attention", "rms_norm", "layer_norm", "rope", "modulate", "gated_residual", "norm_modulate", "gelu",
           "silu", "swiglu", "relu2", "rope_tables", "reference", "use_kernel", "kernel_override", "pinned_kernel",
           "observe", "call_kernel", "chosen_kernels", "chosen_kernel", "available_kernels", "get_policy",
           "OP_NAMES"]


def attention(q, k, v, attn_mask=None, *, kv_lens=None, q_lens=None, is_causal=False,
              scale=None, return_lse=False):
    """softmax(scale * q k^T + mask) v in layout B S N D. Returns out [B, Sq, Nq, Dv]
    (and lse [B, Nq, Sq] float32 with return_lse)."""
    # Unpacking is the cheapest 4-D check on the hot path; detailed messages only on failure.
    try:
        B, _, Nq, D = q.shape
        Bk, Sk, Nk, Dk = k.shape
        Bv, Sv, Nv, _ = v.shape
    except ValueError:
        _raise_attention_layout(q.shape, k.shape, v.shape)
    if B != Bk or Bk != Bv or Sk != Sv or Nk != Nv or D != Dk or Nq % Nk:
        _raise_attention_layout(q.shape, k.shape, v.shape)
    if attn_mask is not None and attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
        raise LayoutError(f"attn_mask must be bool (True = attend) or an additive float mask, "
                          f"got {attn_mask.dtype}")
    return _K.attention(q, k, v, attn_mask, kv_lens, q_lens, is_causal, scale, return_lse)


def _raise_attention_layout(qs, ks, vs):
    if len(qs) != 4 or len(ks) != 4 or len(vs) != 4:
        raise LayoutError(
            f"attention expects q, k, v in layout [B, S, N, D]; got q{tuple(qs)} "
            f"k{tuple(ks)} v{tuple(vs)}. If yours are [B, N, S, D], transpose(1, 2) first.")
    if qs[0] != ks[0] or ks[:3] != vs[:3] or qs[3] != ks[3]:
        raise LayoutError(f"attention shape mismatch: q{tuple(qs)} k{tuple(ks)} v{tuple(vs)} "
                          f"(need same B, k/v same S and N, q/k same D)")
    raise LayoutError(f"GQA needs query heads ({qs[2]}) to be a multiple of KV heads ({ks[2]})")


def rms_norm(x, weight=None, eps=1e-6):
    """RMSNorm over the last dim (per head: pass [..., N, D]; over all heads: [..., N*D])."""
    return _K.rms_norm(x, weight, eps)


def layer_norm(x, weight=None, bias=None, eps=1e-6):
    return _K.layer_norm(x, weight, bias, eps)


def rope(x, cos, sin, style="adjacent"):
    """Rotary embedding on x [B, S, N, D] with fp32 cos/sin [S, D/2] or [B, S, D/2]."""
    if x.dim() != 4:
        raise LayoutError(f"rope expects x in layout [B, S, N, D], got {tuple(x.shape)}")
    if cos.shape[-1] * 2 != x.shape[-1] or cos.shape[-2] != x.shape[1]:
        raise LayoutError(f"rope table {tuple(cos.shape)} does not fit x {tuple(x.shape)}: "
                          f"need [..., S={x.shape[1]}, D/2={x.shape[-1] // 2}]")
    return _K.rope(x, cos, sin, style)


def modulate(x, shift, scale):
    """adaLN modulation x * (1 + scale) + shift."""
    return _K.modulate(x, shift, scale)


def gated_residual(x, y, gate):
    """x + y * gate."""
    return _K.gated_residual(x, y, gate)


def norm_modulate(x, shift, scale, eps=1e-6, out_dtype=None):
    """adaLN in one op: modulate(layer_norm(x, eps=eps), shift, scale), cast to out_dtype (None:
    the promoted dtype). Backends may fuse it; otherwise it is their layer_norm then modulate."""
    return _K.norm_modulate(x, shift, scale, eps, out_dtype)


def gelu(x, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu approximate must be 'none' or 'tanh', got {approximate!r}")
    return _K.gelu(x, approximate)


def silu(x):
    return _K.silu(x)


def swiglu(x):
    """x packed [gate | up] along the last dim -> silu(gate) * up."""
    if x.shape[-1] % 2:
        raise LayoutError(f"swiglu expects [gate | up] packed on the last dim (even size), "
                          f"got {x.shape[-1]}")
    return _K.swiglu(x)


def relu2(x):
    return _K.relu2(x)
