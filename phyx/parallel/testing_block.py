"""A generic DiT block built from phyx.ops and parallelised by a declarative plan, used to prove
that every parallel layout (cfg x sp x tp, sp = ulysses x ring) gives the single-device answer.
It has what the real models need: adaLN modulation from per-token conditioning, fused QKV with
GQA (Colwise with sections), RMSNorm over all heads (HeadShardedRMSNorm: all-reduced under TP),
RoPE, sequence-parallel self-attention (SequenceParallel: Ulysses, ring or USP), cross-attention
to a replicated text context, a gated [gate | up] SwiGLU MLP, row-parallel outputs.
"""
from __future__ import annotations

import torch
import torch.nn as nn

import phyx.ops as ops
from phyx.parallel.cfg import cfg_gather_combine, cfg_split
from phyx.parallel.sequence import SequenceParallel
from phyx.parallel.state import ParallelState, check_layout, get_parallel_state
from phyx.parallel.styles import Colwise, HeadShardedRMSNorm, Rowwise, parallelize


class RMSWeight(nn.Module):
    """A plain RMSNorm with a gain (what HeadShardedRMSNorm turns into a TP norm)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x):
        return ops.rms_norm(x, self.weight, self.eps)


def tp_plan(dim, num_heads, num_kv_heads, ffn_dim, head_dim) -> dict:
    """The toy block's TP plan (its fused layers' sections depend on the sizes)."""
    q, kv = num_heads * head_dim, num_kv_heads * head_dim
    return {"qkv": Colwise(sections=(q, kv, kv)), "norm_q": HeadShardedRMSNorm(),
            "norm_k": HeadShardedRMSNorm(), "o": Rowwise(), "cross_q": Colwise(),
            "cross_kv": Colwise(sections=(dim, dim)), "cross_o": Rowwise(),
            "ffn_in": Colwise(sections=(ffn_dim, ffn_dim)), "ffn_out": Rowwise()}


class TinyDiTBlock(nn.Module):
    def __init__(self, dim=32, num_heads=4, num_kv_heads=2, ffn_dim=48, text_dim=24, eps=1e-6,
                 *, state: ParallelState | None = None):
        super().__init__()
        st = state if state is not None else get_parallel_state()
        check_layout(num_heads, num_kv_heads, st.config, "the toy block")
        self.state, self.eps = st, eps
        self.head_dim = dim // num_heads
        self.q_share = num_heads / (num_heads + 2 * num_kv_heads)   # of the fused qkv width
        hd = self.head_dim
        self.modulation = nn.Parameter(torch.randn(1, 1, 6, dim) / dim ** 0.5)
        self.qkv = nn.Linear(dim, (num_heads + 2 * num_kv_heads) * hd)
        self.norm_q = RMSWeight(num_heads * hd, eps)
        self.norm_k = RMSWeight(num_kv_heads * hd, eps)
        self.o = nn.Linear(num_heads * hd, dim)
        self.cross_q = nn.Linear(dim, dim)
        self.cross_kv = nn.Linear(text_dim, 2 * dim)
        self.cross_o = nn.Linear(dim, dim)
        self.ffn_in = nn.Linear(dim, 2 * ffn_dim)
        self.ffn_out = nn.Linear(ffn_dim, dim)
        parallelize(self, tp_plan(dim, num_heads, num_kv_heads, ffn_dim, hd), st)

    def split_qkv(self, y):
        """[.., (Nq + 2 Nkv) * D] (this rank's heads) -> q [.., Nq, D], k, v [.., Nkv, D]."""
        q_w = round(y.shape[-1] * self.q_share)
        kv_w = (y.shape[-1] - q_w) // 2
        q, k, v = y.split([q_w, kv_w, kv_w], dim=-1)
        return tuple(t.unflatten(-1, (-1, self.head_dim)) for t in (q, k, v))

    def forward(self, x, e, ctx, cos, sin, valid_len: int):
        """x [B, S_local, C], e [B, S_local, 6, C] per-token conditioning, ctx [B, L, text_dim]
        (replicated), cos/sin [S_local, D/2] (this rank's slice); valid_len: true sequence length."""
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation + e).unbind(2)
        h = ops.modulate(ops.layer_norm(x, eps=self.eps), shift1, scale1)
        q, k, v = self.split_qkv(self.qkv(h))
        q = self.norm_q(q.flatten(2)).unflatten(-1, q.shape[-2:])
        k = self.norm_k(k.flatten(2)).unflatten(-1, k.shape[-2:])
        q, k = ops.rope(q, cos, sin), ops.rope(k, cos, sin)
        a = SequenceParallel(valid_len, self.state).attention(q, k, v)
        x = ops.gated_residual(x, self.o(a.flatten(2)), gate1)
        h = ops.layer_norm(x, eps=self.eps)
        cq = self.cross_q(h).unflatten(-1, (-1, self.head_dim))
        ck, cv = (t.unflatten(-1, (-1, self.head_dim)) for t in self.cross_kv(ctx).chunk(2, dim=-1))
        x = x + self.cross_o(ops.attention(cq, ck, cv).flatten(2))
        h = ops.modulate(ops.layer_norm(x, eps=self.eps), shift2, scale2)
        return ops.gated_residual(x, self.ffn_out(ops.swiglu(self.ffn_in(h))), gate2)


def run_block(block: TinyDiTBlock, x, e, ctx, cos, sin):
    """Full-sequence inputs in, full-sequence output out: shard by SP, run, gather."""
    n = x.shape[1]
    sp = SequenceParallel(n, block.state)
    cl, sl = sp.shard_rope(cos, sin)
    return sp.gather(block(sp.shard(x), sp.shard(e), ctx, cl, sl, n))


def guided_step(block: TinyDiTBlock, x, e, ctx_cond, ctx_uncond, cos, sin, guidance: float):
    """One CFG denoising prediction: cond/uncond split across cfg ranks (or batched)."""
    st = block.state
    ctx = cfg_split(ctx_cond, ctx_uncond, state=st)
    if st.cfg_size == 1:
        x, e = torch.cat([x, x]), torch.cat([e, e])
    return cfg_gather_combine(run_block(block, x, e, ctx, cos, sin), guidance, state=st)


# --- reproducible cases: the same weights and inputs on every rank and in the reference -------

def make_case(seed: int, seq_len: int, *, num_heads=4, num_kv_heads=2, dim=32, ffn_dim=48,
              text_dim=24, text_len=5, batch=1):
    """(full state dict, inputs) drawn from a seeded CPU generator: identical in every process."""
    from phyx.parallel.state import ParallelConfig

    g = torch.Generator().manual_seed(seed)
    ref = TinyDiTBlock(dim, num_heads, num_kv_heads, ffn_dim, text_dim,
                       state=ParallelState(ParallelConfig()))
    sd = {}
    for name, p in ref.state_dict().items():
        w = torch.randn(p.shape, generator=g) * (0.3 if p.dim() > 1 else 0.1)
        sd[name] = w + 1.0 if name.startswith("norm_") else w  # norm weights near 1, not exactly
    head_dim = dim // num_heads
    pos = torch.arange(seq_len, dtype=torch.float64)
    freqs = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    ang = pos[:, None] * freqs[None]
    inputs = dict(
        x=torch.randn(batch, seq_len, dim, generator=g),
        e=torch.randn(batch, seq_len, 6, dim, generator=g) * 0.1,  # per-token conditioning
        ctx_cond=torch.randn(batch, text_len, text_dim, generator=g),
        ctx_uncond=torch.randn(batch, text_len, text_dim, generator=g),
        cos=torch.cos(ang).float(), sin=torch.sin(ang).float())
    cfg_kw = dict(dim=dim, num_heads=num_heads, num_kv_heads=num_kv_heads, ffn_dim=ffn_dim,
                  text_dim=text_dim)
    return sd, inputs, cfg_kw


def run_case(state: ParallelState, seed: int, seq_len: int, guidance: float = 5.0, **kw):
    """Build the block for `state`, load the case's full weights (each rank takes its slices),
    run one guided prediction; returns the full output [B, S, C]."""
    from phyx.parallel.layers import load_full_state_dict

    sd, inp, cfg_kw = make_case(seed, seq_len, **kw)
    block = TinyDiTBlock(**cfg_kw, state=state)
    load_full_state_dict(block, sd)
    with torch.no_grad():
        return guided_step(block, inp["x"], inp["e"], inp["ctx_cond"], inp["ctx_uncond"],
                           inp["cos"], inp["sin"], guidance)


def run_layout(cfg: int, sp: int, tp: int, seed: int, seq_len: int, guidance: float = 5.0, *,
               ring: int = 1, **kw):
    """Rank entry point for multi-process tests: init the layout (sp = ulysses x ring), run the
    case, reset."""
    from phyx.parallel.state import ParallelConfig, init_parallel, reset_parallel_state

    state = init_parallel(ParallelConfig(cfg, sp, tp, ring=ring))
    try:
        return run_case(state, seed, seq_len, guidance, **kw)
    finally:
        reset_parallel_state()


def reference(seed: int, seq_len: int, guidance: float = 5.0, **kw):
    """The single-device answer for the same case."""
    from phyx.parallel.state import ParallelConfig

    return run_case(ParallelState(ParallelConfig()), seed, seq_len, guidance, **kw)


def rel_l2(a, b) -> float:
    a, b = a.detach().cpu().double(), b.detach().cpu().double()  # port-ok: host-side metric
    return float((a - b).norm() / b.norm().clamp_min(1e-30))
