"""A small generic DiT built only from phyx.ops and phyx.parallel layers: the model the parity
suite is built and tested on (and the default of `phyx parity record`). It has what the real
world models have where parity bugs hide: a float64 host-side time embedding, 3-D RoPE tables,
QK RMSNorm over all heads, GQA self-attention (Ulysses under SP), text cross-attention with a bool
padding mask, adaLN modulation, a [gate | up] SwiGLU FFN, row-parallel outputs under TP.

Vendor-free: no torch.cuda, no vendor imports.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

import phyx.ops as ops
from phyx.ops import rope_tables
from phyx.parallel import (
    ColumnParallelLinear,
    QKVParallelLinear,
    RowParallelLinear,
    TPRMSNorm,
    get_parallel_state,
    sp_gather,
    sp_pad_and_shard,
    sp_shard_rope,
    ulysses_attention,
)


@dataclass
class TinyDiTConfig:
    in_ch: int = 4
    dim: int = 64
    heads: int = 4
    kv_heads: int = 2
    depth: int = 2
    ffn: int = 96
    text_dim: int = 32
    text_len: int = 9
    grid: tuple = (2, 3, 5)      # latent (f, h, w): S = 30 tokens, not a power of two
    freq_dim: int = 32
    eps: float = 1e-6
    batch: int = 2
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["grid"] = list(self.grid)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TinyDiTConfig":
        """From JSON-like data (a recorded artifact's config): fields checked, unknown keys and a
        model beyond the parameter-memory cap refused (ConfigError)."""
        from phyx.errors import ConfigError
        from phyx.io import untrusted as U

        U.check_fields(cls, d, "tiny-dit config", ConfigError, skip=("extra", "grid"))
        unknown = sorted(str(k) for k in d if k not in cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"tiny-dit config: unknown field(s) {unknown[:5]}")
        d = dict(d)
        if "grid" in d:
            U.check_value("grid", d["grid"], "tuple[int, int, int]", "tiny-dit config", ConfigError,
                          max_int=4096)
            d["grid"] = tuple(d["grid"])
        cfg = cls(**d)
        params = cfg.depth * (4 * cfg.dim * cfg.dim + 2 * cfg.dim * cfg.ffn + 2 * cfg.text_dim * cfg.dim)
        U.check_param_memory(params + cfg.dim * (cfg.in_ch + cfg.freq_dim), "tiny-dit config", ConfigError)
        return cfg


def sinusoid_f64(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Timestep embedding built on the host in float64 (NPUs have no fast float64), as fp32."""
    t = t.detach().to("cpu", torch.float64)
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    ang = t[:, None] * freqs[None]
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=-1).to(torch.float32)


class TimeEmbed(nn.Module):
    def __init__(self, freq_dim, dim):
        super().__init__()
        self.freq_dim = freq_dim
        self.fc1, self.fc2 = nn.Linear(freq_dim, dim), nn.Linear(dim, dim)

    def forward(self, t):
        h = sinusoid_f64(t, self.freq_dim).to(device=self.fc1.weight.device, dtype=self.fc1.weight.dtype)
        return self.fc2(ops.silu(self.fc1(h)))


class RopeTables(nn.Module):
    """Wan-style 3-D RoPE tables for the latent grid: float64 angles on the host -> fp32."""

    def __init__(self, grid, head_dim):
        super().__init__()
        self.grid, self.head_dim = tuple(grid), head_dim

    def build_tables(self, device):
        return rope_tables.to_cos_sin(rope_tables.wan_3d(self.grid, self.head_dim), device)

    def forward(self, x):
        return self.build_tables(x.device)


class SelfAttention(nn.Module):
    def __init__(self, cfg: TinyDiTConfig, state):
        super().__init__()
        self.state = state
        hd = cfg.dim // cfg.heads
        self.qkv = QKVParallelLinear(cfg.dim, cfg.heads, cfg.kv_heads, hd, state=state)
        self.norm_q = TPRMSNorm(cfg.heads * hd, cfg.eps, state=state)
        self.norm_k = TPRMSNorm(cfg.kv_heads * hd, cfg.eps, state=state)
        self.o = RowParallelLinear(cfg.heads * hd, cfg.dim, state=state)

    def forward(self, x, cos, sin, valid_len: int):
        q, k, v = self.qkv.split(self.qkv(x))
        q = self.norm_q(q.flatten(2)).unflatten(-1, q.shape[-2:])
        k = self.norm_k(k.flatten(2)).unflatten(-1, k.shape[-2:])
        q, k = ops.rope(q, cos, sin), ops.rope(k, cos, sin)
        a = ulysses_attention(q, k, v, valid_len=valid_len, state=self.state)
        return self.o(a.flatten(2))


class CrossAttention(nn.Module):
    def __init__(self, cfg: TinyDiTConfig, state):
        super().__init__()
        self.hd = cfg.dim // cfg.heads
        self.q = ColumnParallelLinear(cfg.dim, cfg.dim, state=state)
        self.kv = ColumnParallelLinear(cfg.dim, 2 * cfg.dim, sections=(cfg.dim, cfg.dim), state=state)
        self.o = RowParallelLinear(cfg.dim, cfg.dim, state=state)

    def forward(self, x, ctx, ctx_mask):
        q = self.q(x).unflatten(-1, (-1, self.hd))
        k, v = (t.unflatten(-1, (-1, self.hd)) for t in self.kv(ctx).chunk(2, dim=-1))
        # bool keep-mask (True = attend) over text tokens: the NPU translation must invert it.
        a = ops.attention(q, k, v, attn_mask=ctx_mask[:, None, None, :])
        return self.o(a.flatten(2))


class FFN(nn.Module):
    def __init__(self, cfg: TinyDiTConfig, state):
        super().__init__()
        self.ffn_in = ColumnParallelLinear(cfg.dim, 2 * cfg.ffn, sections=(cfg.ffn, cfg.ffn), state=state)
        self.ffn_out = RowParallelLinear(cfg.ffn, cfg.dim, state=state)

    def forward(self, x):
        return self.ffn_out(ops.swiglu(self.ffn_in(x)))


class Block(nn.Module):
    def __init__(self, cfg: TinyDiTConfig, state):
        super().__init__()
        self.eps = cfg.eps
        self.modulation = nn.Parameter(torch.randn(1, 6, cfg.dim) / cfg.dim ** 0.5)
        self.self_attn = SelfAttention(cfg, state)
        self.cross_attn = CrossAttention(cfg, state)
        self.ffn = FFN(cfg, state)

    def forward(self, x, e, ctx, ctx_mask, cos, sin, valid_len: int):
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation + e).unsqueeze(2).unbind(1)
        h = ops.modulate(ops.layer_norm(x, eps=self.eps), shift1, scale1)
        x = ops.gated_residual(x, self.self_attn(h, cos, sin, valid_len), gate1)
        x = x + self.cross_attn(ops.layer_norm(x, eps=self.eps), ctx, ctx_mask)
        h = ops.modulate(ops.layer_norm(x, eps=self.eps), shift2, scale2)
        return ops.gated_residual(x, self.ffn(h), gate2)


class Head(nn.Module):
    def __init__(self, cfg: TinyDiTConfig):
        super().__init__()
        self.eps = cfg.eps
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim ** 0.5)
        self.proj = nn.Linear(cfg.dim, cfg.in_ch)

    def forward(self, x, t_emb):
        shift, scale = (self.modulation + t_emb[:, None]).unsqueeze(2).unbind(1)
        return self.proj(ops.modulate(ops.layer_norm(x, eps=self.eps), shift, scale))


class TinyDiT(nn.Module):
    def __init__(self, cfg: TinyDiTConfig, state=None):
        super().__init__()
        self.cfg = cfg
        self.state = state if state is not None else get_parallel_state()
        self.patch_embed = nn.Linear(cfg.in_ch, cfg.dim)
        self.time_embed = TimeEmbed(cfg.freq_dim, cfg.dim)
        self.time_proj = nn.Linear(cfg.dim, 6 * cfg.dim)
        self.text_embed = nn.Sequential(nn.Linear(cfg.text_dim, cfg.dim), nn.GELU("tanh"),
                                        nn.Linear(cfg.dim, cfg.dim))
        self.rope = RopeTables(cfg.grid, cfg.dim // cfg.heads)
        self.blocks = nn.ModuleList(Block(cfg, self.state) for _ in range(cfg.depth))
        self.head = Head(cfg)

    def forward(self, x, t, ctx, ctx_mask):
        """x [B, S, in_ch] latent tokens, t [B] float64 timesteps, ctx [B, L, text_dim],
        ctx_mask [B, L] bool (True = real token). Returns [B, S, in_ch]."""
        st = self.state
        h = self.patch_embed(x)
        t_emb = self.time_embed(t)
        e = self.time_proj(ops.silu(t_emb)).unflatten(-1, (6, -1))
        c = self.text_embed(ctx)
        cos, sin = self.rope(h)
        hl, n = sp_pad_and_shard(h, 1, state=st)
        cl, sl = sp_shard_rope(cos, sin, state=st)
        for blk in self.blocks:
            hl = blk(hl, e, c, ctx_mask, cl, sl, n)
        return self.head(sp_gather(hl, 1, n, state=st), t_emb)


def build(cfg: TinyDiTConfig | dict | None = None, seed: int = 0, state=None) -> TinyDiT:
    """Deterministic weights from `seed`, drawn on the CPU in fp32 for the full (tp=1) model and
    then loaded into the (possibly TP-sharded) model, so every layout holds the same weights."""
    from phyx.parallel import load_full_state_dict

    cfg = TinyDiTConfig.from_dict(cfg) if isinstance(cfg, dict) else (cfg or TinyDiTConfig())
    g_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        full = TinyDiT(cfg, _single_device_state()).state_dict()
    finally:
        torch.random.set_rng_state(g_state)
    model = TinyDiT(cfg, state)
    if model.state.tp_size == 1:
        model.load_state_dict(full)
    else:
        load_full_state_dict(model, full)
    return model


def _single_device_state():
    from phyx.parallel import ParallelConfig, ParallelState

    return ParallelState(ParallelConfig())


def make_inputs(cfg: TinyDiTConfig | dict | None = None, seed: int = 0) -> dict:
    """Same inputs on every backend: drawn on the CPU from the seed (noise, text embeddings, a
    text padding mask with different lengths per sample); timesteps in float64 on the CPU."""
    cfg = TinyDiTConfig.from_dict(cfg) if isinstance(cfg, dict) else (cfg or TinyDiTConfig())
    g = torch.Generator().manual_seed(seed)
    f, h, w = cfg.grid
    b = cfg.batch
    lens = [cfg.text_len - 3 * i for i in range(b)]
    mask = torch.arange(cfg.text_len)[None, :] < torch.tensor(lens)[:, None]
    return {"x": torch.randn(b, f * h * w, cfg.in_ch, generator=g),
            "t": torch.linspace(999.0, 250.0, b, dtype=torch.float64),
            "ctx": torch.randn(b, cfg.text_len, cfg.text_dim, generator=g),
            "ctx_mask": mask}


# Layers recorded by default: every one has full (replicated) inputs and outputs under TP.
CAPTURE_LAYERS = ("patch_embed", "time_embed", "time_proj", "text_embed", "rope", "blocks.*",
                  "blocks.*.self_attn", "blocks.*.cross_attn", "blocks.*.ffn", "head")


def forward(model: TinyDiT, inputs: dict, device, dtype) -> torch.Tensor:
    """Cast floating inputs to the run dtype (timesteps stay float64: the model embeds them on the
    host) and run."""
    def cast(k, v):
        if k == "t":
            return v
        v = v.to(device)
        return v.to(dtype) if v.is_floating_point() else v
    return model(**{k: cast(k, v) for k, v in inputs.items()})
