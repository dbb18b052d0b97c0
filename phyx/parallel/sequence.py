"""SequenceParallel: the one entry point through which model code shards a token sequence.

    sp = SequenceParallel(seq_len)          # per forward; inactive (plain code) when sp == 1
    x = sp.shard(tokens)                    # pad to a multiple of sp, keep this rank's slice
    cos, sin = sp.shard_rope(cos, sin)      # full-sequence RoPE tables, padded and sliced alike
    e = sp.shard(per_token_conditioning)    # anything per token goes through the same shard
    out = sp.attention(q, k, v)             # self-attention over the whole sequence
    y = sp.gather(out)                      # all-gather and drop the padding

The layout comes from ParallelConfig(cfg, sp | ulysses, ring, tp); sp = ulysses x ring:
- Ulysses (ring 1): one all-to-all per q/k/v trades sequence for heads, plain attention over
  the full sequence on heads/ulysses, one all-to-all back. The heads per TP rank must divide
  by ulysses (check_layout);
- Ring (ulysses 1): queries stay, K/V blocks travel around the ring (phyx.parallel.ring); no
  head constraint;
- USP (both): Ulysses inside groups of `ulysses` neighbouring SP ranks, which turns the slice
  into a contiguous super-block of ulysses slices on heads/ulysses; ring attention across the
  `ring` groups over those super-blocks. So sp may exceed the head count: ring carries the rest.

Padding: the sequence is padded at the end to a multiple of sp and the padded keys are masked
by key length (valid_len, default the true length) -- never a dense mask; padded query rows
compute something finite and gather drops them.

Two-sequence attention (Cosmos3: media queries over [text K/V, media K/V]): `full_heads(kv)`
turns a sharded sequence into the whole (unpadded) sequence on this rank's head group, and
`attention(..., prefix=(k_text, v_text))` attends to it before the sharded keys.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

import phyx.ops as ops
from phyx import comm
from phyx.parallel.ring import ring_attention
from phyx.parallel.state import ParallelState, get_parallel_state
from phyx.parallel.ulysses import padded_len, sp_gather, sp_pad_and_shard, sp_shard_rope


@dataclass(frozen=True)
class SequencePlan:
    """Where a family's sequence is sharded and gathered, as data.

    shard: {input name: sequence dim} of the full-sequence, per-token inputs (tokens and
    per-token conditioning); rope: the RoPE table is sliced like the tokens; attention: module
    patterns whose attention spans the whole sequence (through SequenceParallel.attention);
    gather: {output name: sequence dim} gathered at the end."""
    shard: dict = field(default_factory=lambda: {"tokens": 1})
    rope: bool = True
    attention: tuple = ()
    gather: dict = field(default_factory=lambda: {"out": 1})


class SequenceParallel:
    def __init__(self, seq_len: int, state: ParallelState | None = None):
        self.state = st = state if state is not None else get_parallel_state()
        self.seq_len = int(seq_len)
        self.size, self.ulysses, self.ring = st.sp_size, st.ulysses_size, st.ring_size
        self.active = self.size > 1
        self.local_len = padded_len(self.seq_len, self.size) // self.size

    def __repr__(self) -> str:
        return (f"SequenceParallel(seq_len={self.seq_len}, sp={self.size}: ulysses {self.ulysses} "
                f"x ring {self.ring})")

    # -- tokens and per-token tables ---------------------------------------------------------
    def shard(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Pad `x` along `dim` (zeros at the end) to a multiple of sp; this rank's slice."""
        if not self.active:
            return x
        self._check_len(x, dim)
        return sp_pad_and_shard(x, dim, state=self.state)[0]

    def shard_rope(self, cos: torch.Tensor, sin: torch.Tensor):
        """Full-sequence RoPE tables ([S, D/2] or [B, S, D/2]) padded with angle 0 and sliced."""
        if not self.active:
            return cos, sin
        self._check_len(cos, cos.dim() - 2)
        return sp_shard_rope(cos, sin, state=self.state)

    def gather(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """All-gather the slices along `dim` and drop the padding."""
        if not self.active:
            return x
        return sp_gather(x, dim, self.seq_len, state=self.state)

    def shard_inputs(self, plan: SequencePlan, rope=None, **inputs) -> dict:
        """Shard every named input the plan lists (None stays None: e.g. a timestep that is
        not per token), and the RoPE (cos, sin) pair when the plan says so."""
        unknown = set(inputs) - set(plan.shard)
        if unknown:
            from phyx.errors import LayoutError
            raise LayoutError(f"inputs {sorted(unknown)} are not in the family's SP_PLAN.shard "
                              f"{sorted(plan.shard)}; add them to the plan (with their sequence dim)")
        out = {k: (None if v is None else self.shard(v, plan.shard[k])) for k, v in inputs.items()}
        if rope is not None:
            out["rope"] = self.shard_rope(*rope) if plan.rope else rope
        return out

    def gather_outputs(self, plan: SequencePlan, **outputs) -> dict:
        return {k: self.gather(v, plan.gather[k]) for k, v in outputs.items()}

    def _check_len(self, x, dim):
        if x.shape[dim] != self.seq_len:
            from phyx.errors import LayoutError
            raise LayoutError(f"SequenceParallel.shard: dim {dim} of {tuple(x.shape)} has "
                              f"{x.shape[dim]} entries, the sequence has {self.seq_len}; shard only "
                              f"full-sequence, per-token tensors")

    # -- Ulysses all-to-all ------------------------------------------------------------------
    def to_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, S/sp, N, D] -> [B, S/ring, N/ulysses, D] (this rank's ulysses super-block)."""
        if self.ulysses == 1:
            return x
        return comm.all_to_all_4d(x, scatter_dim=2, gather_dim=1, group=self.state.ulysses_group)

    def to_seq(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of to_heads."""
        if self.ulysses == 1:
            return x
        return comm.all_to_all_4d(x, scatter_dim=1, gather_dim=2, group=self.state.ulysses_group)

    def kv_to_heads(self, kv: torch.Tensor, num_q_heads: int) -> torch.Tensor:
        """to_heads for K or V with GQA: KV heads that do not divide by ulysses are repeated to
        the query count first (the same attention)."""
        if kv.shape[2] % self.ulysses:
            kv = kv.repeat_interleave(num_q_heads // kv.shape[2], dim=2)
        return self.to_heads(kv)

    def full_heads(self, x: torch.Tensor, n: int | None = None, *, num_q_heads: int | None = None
                   ) -> torch.Tensor:
        """Sharded [B, S/sp, N, D] -> the whole sequence (first n positions, default seq_len)
        on this rank's Ulysses head group [B, n, N/ulysses, D]. num_q_heads: for K/V with GQA,
        repeat the KV heads as kv_to_heads does (so they match keys that went through it)."""
        n = self.seq_len if n is None else n
        if not self.active:
            return x[:, :n]
        x = self.kv_to_heads(x, num_q_heads) if num_q_heads is not None else self.to_heads(x)
        if self.ring > 1:
            x = comm.all_gather(x.contiguous(), dim=1, group=self.state.ring_group)
        return x[:, :n]

    # -- attention ---------------------------------------------------------------------------
    def attention(self, q, k, v, *, valid_len: int | None = None, kv_lens=None, is_causal: bool = False,
                  scale=None, prefix=None):
        """Self-attention of this rank's queries over the whole sequence; q/k/v and the result
        [B, S/sp, N, D]. valid_len: key length (default: the true sequence length, which masks
        the padding); kv_lens [B]: per-sample key lengths, combined with it. prefix (k, v):
        whole-sequence keys on this rank's head group (full_heads) attended before the sequence's
        own keys (unmasked, non-causal)."""
        if not self.active:
            lens = _lens(q.shape[0], valid_len, kv_lens, k.shape[1], q.device)
            if prefix is not None:
                kp, vp = prefix
                k, v = torch.cat([kp, k], 1), torch.cat([vp, v], 1)
                lens = None if lens is None else lens + kp.shape[1]
            return ops.attention(q, k, v, kv_lens=lens, is_causal=is_causal, scale=scale)
        valid_len = self.seq_len if valid_len is None else valid_len
        nq = q.shape[2]
        qh, kh, vh = self.to_heads(q), self.kv_to_heads(k, nq), self.kv_to_heads(v, nq)
        return self.to_seq(self.heads_attention(qh, kh, vh, valid_len=valid_len, kv_lens=kv_lens,
                                                is_causal=is_causal, scale=scale, prefix=prefix))

    def heads_attention(self, q, k, v, *, valid_len: int | None = None, kv_lens=None,
                        is_causal: bool = False, scale=None, prefix=None):
        """Attention on to_heads-layout tensors [B, S/ring, N/ulysses, D]: plain attention over the
        super-block when ring == 1, ring attention across the ring groups otherwise."""
        valid_len = self.seq_len if valid_len is None else valid_len
        if self.ring == 1:
            lens = _lens(q.shape[0], valid_len, kv_lens, k.shape[1], q.device)
            if prefix is not None:
                kp, vp = prefix
                k, v = torch.cat([kp, k], 1), torch.cat([vp, v], 1)
                lens = (lens if lens is not None else torch.full((q.shape[0],), k.shape[1] - kp.shape[1],
                                                                 dtype=torch.int64, device=q.device)) + kp.shape[1]
            return ops.attention(q, k, v, kv_lens=lens, is_causal=is_causal, scale=scale)
        st = self.state
        pre = None if prefix is None else (prefix[0], prefix[1], None)
        return ring_attention(q, k, v, valid_len=valid_len, kv_lens=kv_lens, scale=scale,
                              is_causal=is_causal, prefix=pre, group=st.ring_group,
                              size=st.ring_size, rank=st.ring_rank)


def _lens(B, valid_len, kv_lens, n_keys, device):
    """Key lengths [B] from valid_len and kv_lens (None when neither shortens the keys)."""
    lens = None if kv_lens is None else kv_lens.to(device=device, dtype=torch.int64)
    if valid_len is not None and valid_len < n_keys:
        vl = torch.full((B,), int(valid_len), dtype=torch.int64, device=device)
        lens = vl if lens is None else torch.minimum(lens, vl)
    return lens


def sp_attention(q, k, v, *, valid_len: int | None = None, kv_lens=None, is_causal: bool = False,
                 scale=None, state: ParallelState | None = None):
    """Sequence-parallel self-attention from local-sequence q/k/v [B, S/sp, N, D] (Ulysses, ring
    or USP from the state's layout); valid_len: the true sequence length."""
    st = state if state is not None else get_parallel_state()
    n = valid_len if valid_len is not None else q.shape[1] * st.sp_size
    return SequenceParallel(n, st).attention(q, k, v, valid_len=valid_len, kv_lens=kv_lens,
                                             is_causal=is_causal, scale=scale)
