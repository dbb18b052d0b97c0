"""Ring attention over a ring of ranks: K/V blocks travel around the ring while each rank keeps
its queries; the partial results are merged exactly with their log-sum-exp
(attention(return_lse=True)). It needs no head split, so the ring may be longer than the head
count (long sequences, few heads); USP runs it across Ulysses groups (phyx.parallel.sequence).

Positions: the ring's rank i holds the i-th contiguous block of the (padded) sequence, so key
lengths (valid_len, kv_lens: padding at the end) and causality are decided per block: a block
after the queries' own is skipped under is_causal, the own block is causal on its diagonal, an
earlier one is attended in full.

Needs an attention kernel that returns the LSE; when the chosen one cannot (it raises
UnsupportedArgumentError, never a silently wrong merge) the ring blocks run on the reference
kernel, with a warning. Forward-only.
"""
from __future__ import annotations

import warnings

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


def _lens(B: int, valid_len, kv_lens):
    lens = None
    if valid_len is not None:
        lens = torch.full((B,), int(valid_len), dtype=torch.int64)
    if kv_lens is not None:
        kl = kv_lens.detach().cpu().to(torch.int64)  # port-ok: block lengths are host arithmetic
        lens = kl if lens is None else torch.minimum(lens, kl)
    return lens


_warned: set = set()


def _attend(q, k, v, **kw):
    try:
        return ops.attention(q, k, v, return_lse=True, **kw)
    except UnsupportedArgumentError as e:
        # The chosen kernel cannot give the LSE: the reference kernel can (plain torch, any
        # device). Correct, slower; said once, loudly.
        from phyx.ops import reference

        if "lse" not in _warned:
            _warned.add("lse")
            warnings.warn(f"ring attention needs attention(return_lse=True), which the chosen kernel "
                          f"refuses ({e}); using the reference kernel for the ring blocks (slow). "
                          f"Pick a kernel with LSE output, or ulysses-only SP", stacklevel=3)
        return reference.attention(q, k, v, None, kw.get("kv_lens"), None, kw.get("is_causal", False),
                                   kw.get("scale"), True)


def ring_attention(q, k, v, *, valid_len: int | None = None, kv_lens=None, scale=None,
                   is_causal: bool = False, prefix=None, group=None, size: int | None = None,
                   rank: int | None = None, state: ParallelState | None = None):
    """Attention of this rank's queries over the whole ring's keys.

    q/k/v [B, S_blk, N, D]: this rank's block (every rank's block the same length: pad with
    SequenceParallel.shard). valid_len / kv_lens [B]: key lengths in positions of the whole
    (ring-concatenated) sequence. prefix (k_p, v_p, p_len): extra keys every query attends to in
    full before the ring's (Cosmos3's text K/V), masked at p_len. group/size/rank: the ring
    (default: the state's SP axis). Returns the output [B, S_blk, N, D] in q's dtype."""
    if group is None and size is None:
        st = state if state is not None else get_parallel_state()
        group, size, rank = st.sp_group, st.sp_size, st.sp_rank
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise UnsupportedArgumentError("ring_attention is forward-only (its K/V ring exchange has no "
                                       "backward); train with Ulysses (ring=1), or run under "
                                       "torch.no_grad()")
    P, me = int(size), int(rank or 0)
    B, blk = q.shape[0], k.shape[1]
    lens = _lens(B, valid_len, kv_lens)
    out = torch.zeros(q.shape[:3] + (v.shape[-1],), dtype=torch.float32, device=q.device)
    lse = torch.full((B, q.shape[2], q.shape[1]), float("-inf"), device=q.device)
    if prefix is not None:
        kp, vp, plen = prefix
        pl = None if plen is None or plen >= kp.shape[1] else torch.full((B,), int(plen), device=q.device)
        o, l = _attend(q, kp, vp, kv_lens=pl, scale=scale)
        out, lse = _merge(out, lse, o.float(), l.float())
    kv = torch.stack([k, v]) if k.shape == v.shape else None   # one message per ring step
    for step in range(P):
        src = (me - step) % P  # the rank whose K/V block we hold now
        if not (is_causal and src > me):
            block_lens = None
            if lens is not None:
                block_lens = (lens - src * blk).clamp(0, blk).to(q.device)
            o, l = _attend(q, k, v, kv_lens=block_lens, scale=scale, is_causal=is_causal and src == me)
            out, lse = _merge(out, lse, o.float(), l.float())
        if step + 1 < P:
            if kv is not None:
                kv = comm.ring_exchange(kv, group=group)
                k, v = kv[0], kv[1]
            else:
                k = comm.ring_exchange(k, group=group)
                v = comm.ring_exchange(v, group=group)
    return out.to(q.dtype)
