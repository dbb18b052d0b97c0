"""Sequence sharding helpers (pad, shard, gather, RoPE slicing) shared by every SP mode; the
attention itself lives in phyx.parallel.sequence (Ulysses: one all-to-all per q/k/v trades
sequence for heads, and one for the output).

Sequences of any length: pad to a multiple of sp at the end (sp_pad_and_shard), and mask the
padded keys out of attention by key length (kv_lens) -- never a dense mask. Padded query rows
compute something finite and are dropped by sp_gather. RoPE tables and per-token conditioning
are built for the full sequence, then padded and sliced exactly like the tokens.

Cross-attention needs no SP communication: the local queries attend to the (replicated) text.
"""
from __future__ import annotations

import torch

from phyx import comm
from phyx.parallel.state import ParallelState, get_parallel_state


def _st(state):
    return state if state is not None else get_parallel_state()


def padded_len(n: int, sp: int) -> int:
    return -(-n // sp) * sp


def sp_pad_and_shard(x: torch.Tensor, dim: int = 1, *, state: ParallelState | None = None):
    """Pad `x` along `dim` to a multiple of sp (zeros at the end) and return (this rank's slice,
    original length)."""
    st = _st(state)
    n = x.shape[dim]
    if st.sp_size == 1:
        return x, n
    total = padded_len(n, st.sp_size)
    # the full tensor is replicated; each rank continues with its slice, so in backward the
    # ranks' gradients are summed back into the full tensor (and what produced it)
    x = comm.copy_to_group(x, st.sp_group)
    if total != n:
        pad_shape = list(x.shape)
        pad_shape[dim] = total - n
        x = torch.cat([x, x.new_zeros(pad_shape)], dim=dim)
    return x.chunk(st.sp_size, dim=dim)[st.sp_rank].contiguous(), n


def sp_gather(x: torch.Tensor, dim: int = 1, orig_len: int | None = None, *,
              state: ParallelState | None = None) -> torch.Tensor:
    """All-gather the SP slices along `dim` and drop the padding (keep the first orig_len)."""
    st = _st(state)
    if st.sp_size == 1:
        return x if orig_len is None else x.narrow(dim, 0, orig_len)
    full = comm.all_gather(x, dim=dim, group=st.sp_group)
    return full if orig_len is None else full.narrow(dim, 0, orig_len)


def sp_shard_rope(cos: torch.Tensor, sin: torch.Tensor, *, state: ParallelState | None = None):
    """Slice full-sequence RoPE tables ([S, D/2] or [B, S, D/2]) for this rank, padded like the
    tokens (padded positions get angle 0: cos 1, sin 0)."""
    st = _st(state)
    if st.sp_size == 1:
        return cos, sin
    dim = cos.dim() - 2
    n = cos.shape[dim]
    total = padded_len(n, st.sp_size)
    if total != n:
        shape = list(cos.shape)
        shape[dim] = total - n
        cos = torch.cat([cos, cos.new_ones(shape)], dim=dim)
        sin = torch.cat([sin, sin.new_zeros(shape)], dim=dim)
    return (cos.chunk(st.sp_size, dim=dim)[st.sp_rank].contiguous(),
            sin.chunk(st.sp_size, dim=dim)[st.sp_rank].contiguous())


def ulysses_attention(q, k, v, *, kv_lens=None, valid_len: int | None = None, is_causal=False,
                      scale=None, state: ParallelState | None = None):
    """Self-attention over the full sequence from local-sequence q/k/v [B, S/sp, N, D]; returns
    the local-sequence output. The historical name of phyx.parallel.sequence.sp_attention: it
    runs Ulysses, ring or USP, whichever the state's layout says.

    valid_len: the true (unpadded) sequence length; keys at or beyond it are masked by length.
    kv_lens [B]: per-sample key lengths in full-sequence positions (combined with valid_len)."""
    from phyx.parallel.sequence import sp_attention

    return sp_attention(q, k, v, valid_len=valid_len, kv_lens=kv_lens, is_causal=is_causal,
                        scale=scale, state=state)
