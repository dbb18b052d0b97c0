"""Cosmos-Predict2 DiT (NVIDIA's MiniTrainDIT) on phyx.ops.

Per block: AdaLN-LoRA (shift, scale, gate per latent frame) -> self-attention with per-head QK
RMSNorm and rotate-half 3-D RoPE -> AdaLN-LoRA -> cross-attention to T5 embeddings (1024 wide)
-> AdaLN-LoRA -> exact-GELU MLP. Parameter names mirror diffusers' CosmosTransformer3DModel,
so diffusers checkpoints load without renaming; NVIDIA's official names are mapped in formats.py.

Parallel, declared in plan.py: TP_PLAN splits heads and the MLP (applied to the single-device
modules by phyx.parallel.parallelize); under sequence parallelism (Ulysses, ring or USP, through
one phyx.parallel.SequenceParallel) the patch tokens are padded to a multiple of sp and sharded,
RoPE tables and the per-token frame index are padded and sliced the same way, self-attention
masks the padding by key length, cross-attention needs no communication.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from phyx import ops
from phyx.errors import LayoutError
from phyx.models.activation_checkpointing import CheckpointingMixin, run_block
from phyx.models.cosmos_predict2.config import Predict2Config
from phyx.models.cosmos_predict2.plan import SP_PLAN, TP_PLAN
from phyx.models.layers import RMSWeight
from phyx.ops import rope_tables
from phyx.parallel import (
    ParallelState,
    SequenceParallel,
    check_layout,
    get_parallel_state,
    parallelize,
    running_state,
)


class AdaLNLoRA(nn.Module):
    """silu(emb) -> low-rank (linear_1, linear_2) -> + shared timestep projection -> chunks."""

    def __init__(self, hidden: int, lora_dim: int, chunks: int):
        super().__init__()
        self.chunks = chunks
        self.linear_1 = nn.Linear(hidden, lora_dim, bias=False)
        self.linear_2 = nn.Linear(lora_dim, chunks * hidden, bias=False)

    def forward(self, emb, temb):
        m = self.linear_2(self.linear_1(ops.silu(emb)))
        return (m + temb[..., : m.shape[-1]]).chunk(self.chunks, dim=-1)


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, head_dim: int, kv_dim: int, eps: float):
        super().__init__()
        self.head_dim = head_dim   # heads: from the projections' width (TP shards them)
        inner = heads * head_dim
        self.to_q = nn.Linear(hidden, inner, bias=False)
        self.to_k = nn.Linear(kv_dim, inner, bias=False)
        self.to_v = nn.Linear(kv_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, hidden, bias=False)])
        self.norm_q = RMSWeight(head_dim, eps)
        self.norm_k = RMSWeight(head_dim, eps)

    def _heads(self, t):
        return t.unflatten(-1, (-1, self.head_dim))

    def forward(self, x, context=None, rope=None, attn_mask=None, sp=None):
        ctx = x if context is None else context
        q = self.norm_q(self._heads(self.to_q(x)))
        k = self.norm_k(self._heads(self.to_k(ctx)))
        v = self._heads(self.to_v(ctx))
        if rope is not None:
            cos, sin = rope
            q = ops.rope(q, cos, sin, style="half")
            k = ops.rope(k, cos, sin, style="half")
        if sp is not None and context is None:
            out = sp.attention(q, k, v)
        else:
            out = ops.attention(q, k, v, attn_mask)
        return self.to_out[0](out.flatten(-2))


class _GeluProj(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out, bias=False)

    def forward(self, x):
        return ops.gelu(self.proj(x), approximate="none")


class FeedForward(nn.Module):
    def __init__(self, hidden: int, mult: float):
        super().__init__()
        inner = int(hidden * mult)
        self.net = nn.ModuleList([_GeluProj(hidden, inner), nn.Identity(), nn.Linear(inner, hidden, bias=False)])

    def forward(self, x):
        return self.net[2](self.net[0](x))


class Block(nn.Module):
    def __init__(self, cfg: Predict2Config):
        super().__init__()
        h = cfg.hidden_size
        self.norm1 = AdaLNLoRA(h, cfg.adaln_lora_dim, 3)
        self.attn1 = Attention(h, cfg.num_attention_heads, cfg.attention_head_dim, h, cfg.qk_norm_eps)
        self.norm2 = AdaLNLoRA(h, cfg.adaln_lora_dim, 3)
        self.attn2 = Attention(h, cfg.num_attention_heads, cfg.attention_head_dim, cfg.text_embed_dim,
                               cfg.qk_norm_eps)
        self.norm3 = AdaLNLoRA(h, cfg.adaln_lora_dim, 3)
        self.ff = FeedForward(h, cfg.mlp_ratio)

    @staticmethod
    def _mod(norm, x, emb, temb, frames):
        shift, scale, gate = norm(emb, temb)  # per frame [B, T, C]
        return frames.norm_modulate(x, shift, scale, eps=1e-6), gate

    def forward(self, x, emb, temb, frames, rope, text, text_mask, sp=None):
        """frames: PerFrame's arguments as a plain tuple (T, H*W[, frame index per token]), so
        the parity suite can record and replay a block's inputs."""
        frames = PerFrame(*frames)
        y, gate = self._mod(self.norm1, x, emb, temb, frames)
        x = frames.gated_residual(x, self.attn1(y, rope=rope, sp=sp), gate)
        y, gate = self._mod(self.norm2, x, emb, temb, frames)
        x = frames.gated_residual(x, self.attn2(y, context=text, attn_mask=text_mask), gate)
        y, gate = self._mod(self.norm3, x, emb, temb, frames)
        return frames.gated_residual(x, self.ff(y), gate)


class PerFrame:
    """Applies per-frame adaLN values [B, T, C] to tokens [B, S, C].

    The whole sequence, frame-major (one device, CFG, TP): through a [B*T, H*W, C] view of the
    tokens, with the values broadcast over each frame, so nothing per token is materialised (in
    a training step, per-token copies and their index_add backward cost about 3% of the step at
    720p). Under Ulysses a rank holds an arbitrary padded slice of tokens, so a frame index per
    token selects the rows instead. Both compute the same numbers.
    """

    def __init__(self, frames: int, tokens_per_frame: int, frame_idx=None):
        self.frames, self.per_frame, self.frame_idx = frames, tokens_per_frame, frame_idx

    def _split(self, x, *per_frame):
        if self.frame_idx is not None:
            return x, [m.index_select(1, self.frame_idx) for m in per_frame]
        B, S, C = x.shape
        if S != self.frames * self.per_frame:
            raise ValueError(f"{S} tokens do not make {self.frames} frames of {self.per_frame}")
        n = B * self.frames
        return x.reshape(n, self.per_frame, C), [m.reshape(n, 1, m.shape[-1]) for m in per_frame]

    def norm_modulate(self, x, shift, scale, eps):
        xs, (sh, sc) = self._split(x, shift, scale)
        return ops.norm_modulate(xs, sh, sc, eps).view(x.shape)

    def gated_residual(self, x, y, gate):
        xs, (g,) = self._split(x, gate)
        return ops.gated_residual(xs, y.reshape(xs.shape), g).view(x.shape)


class _TimeMLP(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.linear_1 = nn.Linear(hidden, hidden, bias=False)
        self.linear_2 = nn.Linear(hidden, 3 * hidden, bias=False)


class TimeEmbed(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.t_embedder = _TimeMLP(hidden)
        self.norm = RMSWeight(hidden, 1e-6)

    def forward(self, t, dtype):
        """t [N] -> (temb [N, 3h] for the AdaLN sums, emb [N, h] = RMSNorm(sinusoid))."""
        proj = sinusoid(t, self.hidden).to(dtype)
        temb = self.t_embedder.linear_2(ops.silu(self.t_embedder.linear_1(proj)))
        return temb, self.norm(proj)


def sinusoid(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[cos | sin] timestep embedding (diffusers' Timesteps with flip_sin_to_cos=True, shift 0),
    angles in float32 as diffusers computes them."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    ang = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=-1)


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, lora_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(hidden, lora_dim, bias=False)
        self.linear_2 = nn.Linear(lora_dim, 2 * hidden, bias=False)


class Predict2DiT(CheckpointingMixin, nn.Module):
    def __init__(self, cfg: Predict2Config, parallel: ParallelState | None = None):
        """parallel: the layout to build for (default: the current phyx.parallel state)."""
        super().__init__()
        self.config = cfg.validate()
        st = parallel if parallel is not None else get_parallel_state()
        self.layout = st.config
        check_layout(cfg.num_attention_heads, cfg.num_attention_heads, st.config, "Cosmos-Predict2")
        h = cfg.hidden_size
        pt, ph, pw = cfg.patch_size
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Linear(cfg.patch_in_channels * pt * ph * pw, h, bias=False)
        self.time_embed = TimeEmbed(h)
        self.transformer_blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.num_layers)])
        self.norm_out = FinalLayer(h, cfg.adaln_lora_dim)
        self.proj_out = nn.Linear(h, pt * ph * pw * cfg.out_channels, bias=False)
        if cfg.use_crossattn_projection:
            self.crossattn_proj = nn.ModuleList([nn.Linear(cfg.crossattn_proj_in_channels,
                                                           cfg.encoder_hidden_states_channels, bias=True)])
        parallelize(self, TP_PLAN, st)

    # -- input assembly -------------------------------------------------------------------------
    def _inputs(self, x, condition_mask, padding_mask):
        cfg = self.config
        B, C, T, H, W = x.shape
        if C != cfg.out_channels:
            raise LayoutError(f"latents have {C} channels, the model expects {cfg.out_channels} "
                              f"([B, C, T, H, W])")
        parts = [x]
        if cfg.video2world:
            if condition_mask is None:  # image batches of a Video2World model: nothing conditioned
                condition_mask = x.new_zeros(B, 1, T, H, W)
            parts.append(condition_mask.to(x.dtype).expand(B, 1, T, H, W))
        elif condition_mask is not None:
            raise LayoutError("condition_mask given, but this is a Text2Image checkpoint (in_channels == "
                              "out_channels); pass it only to Video2World models")
        if cfg.concat_padding_mask:
            pm = x.new_zeros(1, 1, H, W) if padding_mask is None else padding_mask.to(x.dtype)
            if pm.dim() != 4:
                raise LayoutError(f"padding_mask must be [B or 1, 1, H, W], got {tuple(pm.shape)}")
            if pm.shape[-2:] != (H, W):  # nearest resize to the latent grid, as upstream does
                pm = torch.nn.functional.interpolate(pm, size=(H, W), mode="nearest")
            parts.append(pm[:, :, None].expand(B, 1, T, H, W))
        return torch.cat(parts, dim=1)

    def _patchify(self, x):
        pt, ph, pw = self.config.patch_size
        B, C, T, H, W = x.shape
        if T % pt or H % ph or W % pw:
            raise LayoutError(f"latent size (T={T}, H={H}, W={W}) must be divisible by the patch size "
                              f"{self.config.patch_size}")
        x = x.reshape(B, C, T // pt, pt, H // ph, ph, W // pw, pw)
        x = x.permute(0, 2, 4, 6, 1, 3, 5, 7).flatten(4, 7)   # channel order (c, pt, ph, pw)
        return self.patch_embed.proj(x).flatten(1, 3), (T // pt, H // ph, W // pw)

    def _unpatchify(self, y, grid):
        pt, ph, pw = self.config.patch_size
        f, h, w = grid
        B = y.shape[0]
        y = y.view(B, f, h, w, ph, pw, pt, -1)                # proj_out order (ph, pw, pt, c)
        y = y.permute(0, 7, 1, 6, 2, 4, 3, 5)
        return y.reshape(B, y.shape[1], f * pt, h * ph, w * pw)

    def _frame_timesteps(self, timestep, B, T):
        t = torch.as_tensor(timestep)
        if t.dim() == 0:
            t = t.expand(B)
        if t.dim() == 5:                 # diffusers' [B, 1, T, 1, 1]
            t = t.reshape(t.shape[0], -1)
        if t.dim() == 1:
            if t.shape[0] != B:
                raise LayoutError(f"timestep has {t.shape[0]} entries for batch {B}")
            t = t[:, None].expand(B, T)
        if tuple(t.shape) != (B, T):
            raise LayoutError(f"timestep must be [B], [B, T] or [B, 1, T, 1, 1] with B={B}, T={T}; "
                              f"got {tuple(torch.as_tensor(timestep).shape)}")
        return t

    def rope_angles(self, grid, fps=None):
        cfg = self.config
        limit = [m // p for m, p in zip(cfg.max_size, cfg.patch_size)]
        if any(g > m for g, m in zip(grid, limit)):
            raise LayoutError(f"patch grid {grid} exceeds the model's max size {tuple(limit)}")
        return rope_tables.cosmos_predict2_3d(grid, cfg.attention_head_dim, tuple(cfg.rope_scale), fps=fps,
                                              base_fps=cfg.base_fps)

    # -- forward --------------------------------------------------------------------------------
    def forward(self, hidden_states, timestep, encoder_hidden_states, *, fps=None, condition_mask=None,
                padding_mask=None, text_mask=None):
        """hidden_states [B, C, T, H, W] (already scaled by c_in), timestep [B] / [B, T] /
        [B, 1, T, 1, 1] (rectified-flow t), encoder_hidden_states [B, S, text_embed_dim];
        text_mask [B, S] (True / 1 = real token). Returns the raw network output [B, C, T, H, W]."""
        x = hidden_states
        B, _, T, _, _ = x.shape
        dtype = x.dtype
        tokens, grid = self._patchify(self._inputs(x, condition_mask, padding_mask))
        t_bt = self._frame_timesteps(timestep, B, T).to(x.device)
        temb, emb = self.time_embed(t_bt.reshape(-1), dtype)
        temb, emb = temb.view(B, T, -1), emb.view(B, T, -1)
        f, h, w = grid
        cos, sin = rope_tables.to_cos_sin(self.rope_angles(grid, fps), x.device)
        text = encoder_hidden_states.to(dtype)
        if self.config.use_crossattn_projection:
            text = ops.gelu(self.crossattn_proj[0](text), approximate="none")
        mask = None
        if text_mask is not None:
            mask = text_mask.to(device=x.device).bool()[:, None, None, :]

        sp = SequenceParallel(tokens.shape[1], running_state(self.layout))
        sp = sp if sp.active else None
        frames = (f, h * w)
        if sp is not None:
            frame_idx = torch.arange(f, device=x.device).repeat_interleave(h * w)
            sh = sp.shard_inputs(SP_PLAN, rope=(cos, sin), tokens=tokens, frame_index=frame_idx)
            tokens, (cos, sin) = sh["tokens"], sh["rope"]
            frames = (f, h * w, sh["frame_index"])
        for blk in self.transformer_blocks:
            tokens = run_block(blk, self.gradient_checkpointing, tokens, emb, temb, frames, (cos, sin),
                               text, mask, sp)
        shift, scale = self._final_mod(emb, temb)
        out = self.proj_out(PerFrame(*frames).norm_modulate(tokens, shift, scale, eps=1e-6))
        if sp is not None:
            out = sp.gather_outputs(SP_PLAN, out=out)["out"]
        return self._unpatchify(out, grid)

    def _final_mod(self, emb, temb):
        m = self.norm_out.linear_2(self.norm_out.linear_1(ops.silu(emb)))
        return (m + temb[..., : m.shape[-1]]).chunk(2, dim=-1)
