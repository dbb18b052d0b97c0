"""The few parallel primitives the Wan DiT uses, taken from phyx.parallel, with single-device
stand-ins so the model runs (tp = sp = 1) wherever phyx.parallel is absent or not initialised."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from phyx import ops

try:  # phyx.parallel is optional at import time: single-device code must not need it
    import phyx.parallel as _par
except ImportError:  # pragma: no cover - only while phyx.parallel is being written
    _par = None


@dataclass(frozen=True)
class Layout:
    tp_rank: int = 0
    tp_size: int = 1
    sp_rank: int = 0
    sp_size: int = 1


def current_layout() -> Layout:
    if _par is None:
        return Layout()
    st = _par.get_parallel_state()
    return Layout(st.tp_rank, st.tp_size, st.sp_rank, st.sp_size)


def check_layout(lay: Layout) -> None:
    """A model built for a parallel layout must run under that same parallel state."""
    if lay.tp_size == 1 and lay.sp_size == 1:
        return  # a single-device model runs anywhere (e.g. as the reference on every rank)
    cur = current_layout()
    if cur != lay:
        raise ValueError(f"model layout {lay} differs from the current parallel state {cur}; build the "
                         f"model after phyx.parallel.init_parallel, or with Layout() for one device")


def column_linear(in_f: int, out_f: int, lay: Layout, bias: bool = True) -> nn.Module:
    if lay.tp_size == 1:
        return nn.Linear(in_f, out_f, bias=bias)
    return _par.ColumnParallelLinear(in_f, out_f, bias=bias, gather_output=False)


def row_linear(in_f: int, out_f: int, lay: Layout, bias: bool = True) -> nn.Module:
    if lay.tp_size == 1:
        return nn.Linear(in_f, out_f, bias=bias)
    return _par.RowParallelLinear(in_f, out_f, bias=bias, input_is_parallel=True)


def all_heads_rms_norm(x_local, weight_local, eps: float, full_dim: int, tp_size: int):
    """Wan's q/k RMSNorm over all heads; under TP the sum of squares is all-reduced."""
    if tp_size == 1:
        return ops.rms_norm(x_local, weight_local, eps)
    return _par.tp_rms_norm(x_local, weight_local, eps, full_dim)


def self_attention(q, k, v, valid_len: int | None, sp_size: int):
    """Self-attention over the full sequence; under SP the padded keys (>= valid_len) are
    masked by length inside ulysses_attention."""
    if sp_size == 1:
        return ops.attention(q, k, v)
    return _par.ulysses_attention(q, k, v, valid_len=valid_len)


def sp_shard_rope(cos, sin, sp_size: int):
    """Full-sequence RoPE tables padded (angle 0) and sliced like the tokens."""
    if sp_size == 1:
        return cos, sin
    return _par.sp_shard_rope(cos, sin)


def sp_shard(x: torch.Tensor, dim: int, sp_size: int):
    """Pad `x` along `dim` to a multiple of sp and keep this rank's part -> (local, orig_len)."""
    if sp_size == 1:
        return x, x.shape[dim]
    return _par.sp_pad_and_shard(x, dim=dim)


def sp_gather(x: torch.Tensor, dim: int, orig_len: int, sp_size: int):
    if sp_size == 1:
        return x
    return _par.sp_gather(x, dim=dim, orig_len=orig_len)
