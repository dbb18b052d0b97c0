"""Ring attention over the SP group: K/V blocks travel around the ring while each rank keeps its
queries; partial results are merged exactly with their log-sum-exp (attention(return_lse=True)).
Unlike Ulysses it needs no head split, so sp may exceed the head count (long sequences, few
heads). Padding is masked per block by key length, like Ulysses.

Needs an attention kernel that returns the LSE (the reference kernel does; a kernel that cannot
raises UnsupportedArgumentError, never a silently wrong merge).
"""
from __future__ import annotations

import torch

import phyx.ops as ops
from phyx import comm
from phyx.errors import UnsupportedArgumentError
from phyx.parallel.state import ParallelState, get_parallel_state


def _merge(out, lse, o, l):
    """Combine two partial softmax results (out/o: [B, S, N, D] fp32, lse/l: [B, N, S])."""
    new = torch.logaddexp(lse, l)
    safe = torch.where(torch.isfinite(new), new, torch.zeros_like(new))
    a = torch.exp(lse - safe).masked_fill(~torch.isfinite(new), 0.0)
    b = torch.exp(l - safe).masked_fill(~torch.isfinite(new), 0.0)
    return out * a.transpose(1, 2)[..., None] + o * b.transpose(1, 2)[..., None], new


def ring_attention(q, k, v, *, valid_len: int | None = None, kv_lens=None, scale=None,
                   is_causal: bool = False, state: ParallelState | None = None):
    """Self-attention over the full sequence from local-sequence q/k/v [B, S/sp, N, D] (equal
    local lengths: pad with sp_pad_and_shard); returns the local output [B, S/sp, N, D].
    valid_len / kv_lens [B]: key lengths in full-sequence positions."""
    st = state if state is not None else get_parallel_state()
    if is_causal:
        raise UnsupportedArgumentError("ring_attention does not implement is_causal yet; use "
                                       "ulysses_attention for causal attention")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise UnsupportedArgumentError("ring_attention is forward-only (its K/V ring exchange has no "
                                       "backward); train with ulysses_attention, or run under "
                                       "torch.no_grad()")
    P, me, g = st.sp_size, st.sp_rank, st.sp_group
    B, s_local = q.shape[0], k.shape[1]
    lens = None
    if valid_len is not None:
        lens = torch.full((B,), int(valid_len), dtype=torch.int64)
    if kv_lens is not None:
        kl = kv_lens.cpu().to(torch.int64)
        lens = kl if lens is None else torch.minimum(lens, kl)
    out = torch.zeros(q.shape[:3] + (v.shape[-1],), dtype=torch.float32, device=q.device)
    lse = torch.full((B, q.shape[2], q.shape[1]), float("-inf"), device=q.device)
    for step in range(P):
        src = (me - step) % P  # the rank whose K/V block we hold now
        block_lens = None
        if lens is not None:
            block_lens = (lens - src * s_local).clamp(0, s_local).to(q.device)
        try:
            o, l = ops.attention(q, k, v, kv_lens=block_lens, scale=scale, return_lse=True)
        except UnsupportedArgumentError as e:
            raise UnsupportedArgumentError(
                f"ring attention needs attention(return_lse=True), which the chosen kernel refuses "
                f"({e}); use policy 'reference' or a kernel with LSE output") from e
        out, lse = _merge(out, lse, o.float(), l.float())
        if step + 1 < P:
            k = comm.ring_exchange(k, group=g)
            v = comm.ring_exchange(v, group=g)
    return out.to(q.dtype)
