"""Ulysses sequence parallel: each SP rank holds S/sp tokens; attention trades sequence for
heads with one all-to-all per q/k/v and one for the output.

Sequences of any length: pad to a multiple of sp at the end (sp_pad_and_shard), and mask the
padded keys out of attention by key length (kv_lens) -- never a dense mask. Padded query rows
compute something finite and are dropped by sp_gather. RoPE tables and per-token conditioning
are built for the full sequence, then padded and sliced exactly like the tokens.

Cross-attention needs no SP communication: the local queries attend to the (replicated) text.
"""
from __future__ import annotations

import torch

import phyx.ops as ops
from phyx import comm
from phyx.errors import ParallelConfigError
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


def check_ulysses_heads(num_heads: int, sp: int) -> None:
    if num_heads % sp:
        raise ParallelConfigError(
            f"Ulysses: the {num_heads} attention heads on this rank (after any TP split) do not "
            f"divide by sp={sp}; heads must divide by sp (x tp). Choose sp from "
            f"{[d for d in range(1, num_heads + 1) if num_heads % d == 0]} or use ring attention")


def ulysses_attention(q, k, v, *, kv_lens=None, valid_len: int | None = None, is_causal=False,
                      scale=None, attn_mask=None, state: ParallelState | None = None):
    """Self-attention over the full sequence from local-sequence q/k/v [B, S/sp, N, D] holding
    all (TP-local) heads; returns the local-sequence output [B, S/sp, N, D].

    valid_len: the true (unpadded) sequence length; keys at or beyond it are masked by length.
    kv_lens [B]: per-sample key lengths in full-sequence positions (combined with valid_len).
    attn_mask: broadcastable to [B, N or 1, S_full_padded, S_full_padded]; a per-head mask is
    sliced to this rank's heads."""
    st = _st(state)
    sp = st.sp_size
    B = q.shape[0]
    lens = kv_lens
    if valid_len is not None and (sp > 1 or valid_len < k.shape[1]):
        vl = torch.full((B,), int(valid_len), dtype=torch.int64, device=q.device)
        lens = vl if lens is None else torch.minimum(lens.to(q.device, torch.int64), vl)
    if sp == 1:
        return ops.attention(q, k, v, attn_mask, kv_lens=lens, is_causal=is_causal, scale=scale)
    nq, nkv = q.shape[2], k.shape[2]
    check_ulysses_heads(nq, sp)
    if nkv % sp:
        # GQA with fewer KV heads than sp: repeat KV heads to the query count (same result).
        k = k.repeat_interleave(nq // nkv, dim=2)
        v = v.repeat_interleave(nq // nkv, dim=2)
    g = st.sp_group
    qh = comm.all_to_all_4d(q, scatter_dim=2, gather_dim=1, group=g)  # [B, S, N/sp, D]
    kh = comm.all_to_all_4d(k, scatter_dim=2, gather_dim=1, group=g)
    vh = comm.all_to_all_4d(v, scatter_dim=2, gather_dim=1, group=g)
    if attn_mask is not None and attn_mask.dim() == 4 and attn_mask.shape[1] == nq:
        attn_mask = attn_mask.chunk(sp, dim=1)[st.sp_rank]
    out = ops.attention(qh, kh, vh, attn_mask, kv_lens=lens, is_causal=is_causal, scale=scale)
    return comm.all_to_all_4d(out, scatter_dim=1, gather_dim=2, group=g)  # [B, S/sp, N, D]
