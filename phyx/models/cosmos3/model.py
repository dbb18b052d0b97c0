"""Cosmos3 omni transformer on phyx.ops: one packed sample, two towers per layer.

- Understanding tower (the Qwen3-VL text backbone): causal self-attention over the text.
  Its per-layer K/V (keys optionally re-normed for the generation side) are what the
  generation tower reads; they never depend on the media tokens, so `encode_text` computes them
  once per prompt (per CFG branch) and `forward(..., text_cache=...)` reuses them every step.
- Generation tower: full attention of the media tokens over [text K/V, media K/V].
Both: GQA (Nano: 32 query / 8 KV heads), per-head q/k RMSNorm, rotate-half RoPE over Qwen3-VL
interleaved mRoPE angles (phyx.ops.rope_tables.cosmos3_mrope), SwiGLU or relu2 MLP.
Media: video latents (48 ch) in 2x2 patches, sound latents [C, T] (25 Hz), optional action
tokens with per-embodiment projections; a sinusoidal timestep embedding is added to the noisy
tokens. Parameter names mirror diffusers' Cosmos3OmniTransformer.

Parallel, declared in plan.py: TP_PLAN splits query and KV heads (tp must divide the KV heads)
and the MLPs, applied to the single-device modules by phyx.parallel.parallelize. Sequence
parallelism (Ulysses, ring or USP) shards the text and the media tokens separately, each through
its own phyx.parallel.SequenceParallel; the generation attention attends to the whole text K/V
(full_heads) as a prefix of the sharded media keys.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from phyx import ops
from phyx.errors import LayoutError
from phyx.models.activation_checkpointing import CheckpointingMixin, run_block
from phyx.models.cosmos3.config import Cosmos3Config
from phyx.models.cosmos3.plan import SP_PLAN, TP_PLAN
from phyx.models.cosmos3.positions import SequenceLayout, position_ids
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


def _norm_or_identity(on: bool, dim: int, eps: float):
    return RMSWeight(dim, eps) if on else nn.Identity()


class MoTAttention(nn.Module):
    def __init__(self, cfg: Cosmos3Config):
        super().__init__()
        D, nq, nkv, H, b = cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size, \
            cfg.attention_bias
        self.head_dim = D   # head counts: from the projections' width (TP shards them)
        self.to_q = nn.Linear(H, nq * D, bias=b)
        self.to_k = nn.Linear(H, nkv * D, bias=b)
        self.to_v = nn.Linear(H, nkv * D, bias=b)
        self.to_out = nn.Linear(nq * D, H, bias=b)
        eps = cfg.rms_norm_eps
        self.norm_q = _norm_or_identity(cfg.qk_norm_for_text, D, eps)
        self.norm_k = _norm_or_identity(cfg.qk_norm_for_text, D, eps)
        self.k_norm_und_for_gen = (RMSWeight(D, eps) if cfg.use_und_k_norm_for_gen and not cfg.qk_norm_for_text
                                   else None)
        self.add_q_proj = nn.Linear(H, nq * D, bias=b)
        self.add_k_proj = nn.Linear(H, nkv * D, bias=b)
        self.add_v_proj = nn.Linear(H, nkv * D, bias=b)
        self.to_add_out = nn.Linear(nq * D, H, bias=b)
        self.norm_added_q = RMSWeight(D, eps)
        self.norm_added_k = RMSWeight(D, eps)

    def _h(self, t):
        return t.unflatten(-1, (-1, self.head_dim))

    def und(self, x, rope, sp):
        """Causal text attention; returns (output, (k_for_gen, v)) with k/v as the generation
        attention consumes them (under SP: full text sequence, this rank's heads)."""
        cos, sin = rope
        q = ops.rope(self.norm_q(self._h(self.to_q(x))), cos, sin, style="half")
        k = self.norm_k(self._h(self.to_k(x)))
        v = self._h(self.to_v(x))
        k_gen = k if self.k_norm_und_for_gen is None else self.k_norm_und_for_gen(k)
        k = ops.rope(k, cos, sin, style="half")
        k_gen = ops.rope(k_gen, cos, sin, style="half")
        if sp is None:
            out = ops.attention(q, k, v, is_causal=True)
            kv = (k_gen, v)
        else:
            out = sp.attention(q, k, v, is_causal=True)
            nq = q.shape[2]
            kv = (sp.full_heads(k_gen, num_q_heads=nq), sp.full_heads(v, num_q_heads=nq))
        return self.to_out(out.flatten(-2)), kv

    def gen(self, x, rope, kv, sp):
        cos, sin = rope
        q = ops.rope(self.norm_added_q(self._h(self.add_q_proj(x))), cos, sin, style="half")
        k = ops.rope(self.norm_added_k(self._h(self.add_k_proj(x))), cos, sin, style="half")
        v = self._h(self.add_v_proj(x))
        k_und, v_und = kv
        if sp is None:
            out = ops.attention(q, torch.cat([k_und, k], 1), torch.cat([v_und, v], 1))
        else:   # two-sequence attention: the whole text K/V, then the sharded media K/V
            out = sp.attention(q, k, v, prefix=(k_und, v_und))
        return self.to_add_out(out.flatten(-2))


class MLP(nn.Module):
    def __init__(self, cfg: Cosmos3Config):
        super().__init__()
        H, inter = cfg.hidden_size, cfg.intermediate_size
        self.act = cfg.hidden_act
        if self.act == "silu":
            self.gate_proj = nn.Linear(H, inter, bias=False)
        self.up_proj = nn.Linear(H, inter, bias=False)
        self.down_proj = nn.Linear(inter, H, bias=False)

    def forward(self, x):
        if self.act == "relu2":
            return self.down_proj(ops.relu2(self.up_proj(x)))
        return self.down_proj(ops.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, cfg: Cosmos3Config):
        super().__init__()
        eps, H = cfg.rms_norm_eps, cfg.hidden_size
        self.self_attn = MoTAttention(cfg)
        self.mlp = MLP(cfg)
        self.mlp_moe_gen = MLP(cfg)
        self.input_layernorm = RMSWeight(H, eps)
        self.input_layernorm_moe_gen = RMSWeight(H, eps)
        self.post_attention_layernorm = RMSWeight(H, eps)
        self.post_attention_layernorm_moe_gen = RMSWeight(H, eps)

    def und(self, x, rope, sp):
        a, kv = self.self_attn.und(self.input_layernorm(x), rope, sp)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), kv

    def gen(self, x, rope, kv, sp):
        x = x + self.self_attn.gen(self.input_layernorm_moe_gen(x), rope, kv, sp)
        return x + self.mlp_moe_gen(self.post_attention_layernorm_moe_gen(x))


class DomainAwareLinear(nn.Module):
    """One (weight, bias) per embodiment domain, stored as embeddings (diffusers' layout)."""

    def __init__(self, d_in: int, d_out: int, domains: int):
        super().__init__()
        self.d_in, self.d_out, self.domains = d_in, d_out, domains
        self.fc = nn.Embedding(domains, d_in * d_out)
        self.bias = nn.Embedding(domains, d_out)

    def forward(self, x, domain):   # x [N, d_in], domain [N]
        if torch.any((domain < 0) | (domain >= self.domains)):
            raise ValueError(f"action domain id must be in [0, {self.domains}), got {domain.unique().tolist()}")
        w = self.fc(domain).view(-1, self.d_in, self.d_out)
        return torch.bmm(x[:, None], w)[:, 0] + self.bias(domain)


class _TimeEmbedder(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.linear_1 = nn.Linear(256, hidden)
        self.linear_2 = nn.Linear(hidden, hidden)

    def forward(self, t):
        w = self.linear_1.weight
        proj = _sinusoid(t.to(w.device), 256).to(w.dtype)
        return self.linear_2(ops.silu(self.linear_1(proj)))


def _sinusoid(t, dim, max_period=10000.0):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    ang = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=-1)


@dataclass
class TextCache:
    """Per-layer K/V of the understanding tower (rope applied), plus its final hidden states."""
    kv: list
    text_hidden: torch.Tensor
    text_len: int


class Cosmos3Omni(CheckpointingMixin, nn.Module):
    def __init__(self, cfg: Cosmos3Config, parallel: ParallelState | None = None):
        """parallel: the layout to build for (default: the current phyx.parallel state)."""
        super().__init__()
        self.config = cfg.validate()
        st = parallel if parallel is not None else get_parallel_state()
        self.layout = st.config
        check_layout(cfg.num_attention_heads, cfg.num_key_value_heads, st.config, "Cosmos3")
        H = cfg.hidden_size
        self.embed_tokens = nn.Embedding(cfg.vocab_size, H)
        self.layers = nn.ModuleList([Layer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSWeight(H, cfg.rms_norm_eps)
        self.norm_moe_gen = RMSWeight(H, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(H, cfg.vocab_size, bias=False)
        self.proj_in = nn.Linear(cfg.patch_latent_dim, H)
        self.proj_out = nn.Linear(H, cfg.patch_latent_dim)
        self.time_embedder = _TimeEmbedder(H)
        if cfg.action_gen:
            self.action_proj_in = DomainAwareLinear(cfg.action_dim, H, cfg.num_embodiment_domains)
            self.action_proj_out = DomainAwareLinear(H, cfg.action_dim, cfg.num_embodiment_domains)
            self.action_modality_embed = nn.Parameter(torch.zeros(H))
        if cfg.sound_gen:
            self.audio_proj_in = nn.Linear(cfg.sound_dim, H)
            self.audio_proj_out = nn.Linear(H, cfg.sound_dim)
            self.audio_modality_embed = nn.Parameter(torch.zeros(H))
        parallelize(self, TP_PLAN, st)

    # -- helpers --------------------------------------------------------------------------------
    def _sp(self, seq_len):
        sp = SequenceParallel(seq_len, running_state(self.layout))
        return sp if sp.active else None

    def _time(self, t, n, dtype):
        t = torch.as_tensor(t, dtype=torch.float32)
        t = t.expand(n) if t.dim() == 0 else t
        if t.shape[0] != n:
            raise LayoutError(f"got {t.shape[0]} timesteps for {n} noisy tokens (pass one per noisy token "
                              f"or a scalar)")
        return self.time_embedder(t * self.config.timestep_scale).to(dtype)

    @staticmethod
    def _noisy_token_index(noisy_frames, per_frame, device):
        return (noisy_frames.to(device)[:, None] * per_frame + torch.arange(per_frame, device=device)).reshape(-1)

    def _patchify(self, latent):
        p, C = self.config.latent_patch_size, self.config.latent_channel
        if latent.dim() == 5:
            latent = latent[0]
        if latent.shape[0] != C:
            raise LayoutError(f"vision latents must be [C={C}, T, H, W] (or [1, C, T, H, W]), got {tuple(latent.shape)}")
        _, T, H, W = latent.shape
        Hp, Wp = -(-H // p) * p, -(-W // p) * p
        if (Hp, Wp) != (H, W):
            latent = torch.nn.functional.pad(latent, (0, Wp - W, 0, Hp - H))
        x = latent.reshape(C, T, Hp // p, p, Wp // p, p).permute(1, 2, 4, 3, 5, 0)  # t h w p q c
        return x.reshape(-1, p * p * C), (T, Hp // p, Wp // p), (H, W)

    def _unpatchify(self, pred, grid, hw, noisy_frames):
        p, C = self.config.latent_patch_size, self.config.latent_channel
        T, h, w = grid
        out = pred.new_zeros(C, T, *hw)
        x = pred.reshape(len(noisy_frames), h, w, p, p, C).permute(5, 0, 1, 3, 2, 4)
        out[:, noisy_frames] = x.reshape(C, len(noisy_frames), h * p, w * p)[:, :, :hw[0], :hw[1]]
        return out[None]

    def rope_angles(self, positions):
        return rope_tables.cosmos3_mrope(positions, self.config.head_dim, self.config.rope_theta,
                                         self.config.rope_axes_dim)

    # -- understanding tower ----------------------------------------------------------------------
    def encode_text(self, input_ids, positions=None) -> TextCache:
        """Run the understanding tower over the text once; its per-layer K/V stay valid for every
        denoising step of this prompt. positions: [3, U] ids (default 0..U-1 on all axes)."""
        U = int(input_ids.shape[0])
        if positions is None:
            positions = rope_tables.cosmos3_text_positions(U)[0]
        x = self.embed_tokens(input_ids.to(self.embed_tokens.weight.device))[None]
        cos, sin = rope_tables.to_cos_sin(self.rope_angles(positions[:, :U]), x.device)
        sp = self._sp(U)
        if sp is not None:
            sh = sp.shard_inputs(SP_PLAN, rope=(cos, sin), text=x)
            x, (cos, sin) = sh["text"], sh["rope"]
        kvs = []
        for layer in self.layers:
            x, kv = layer.und(x, (cos, sin), sp)
            kvs.append(kv)
        x = self.norm(x)
        if sp is not None:
            x = sp.gather_outputs(SP_PLAN, text=x)["text"]
        return TextCache(kvs, x[0], U)

    # -- full step --------------------------------------------------------------------------------
    def forward(self, input_ids, vision, vision_timesteps, *, vision_noisy_frames=None, sound=None,
                sound_timesteps=None, action=None, action_domain=None, action_noisy_frames=None,
                action_timesteps=None, fps: float | None = 24.0, position_ids_override=None,
                text_cache: TextCache | None = None):
        """One denoising step for one packed sample.

        input_ids [U]; vision [C, T, H, W] latents (conditioning frames clean, the rest noisy);
        vision_timesteps: scalar or one per noisy vision token; vision_noisy_frames [Tn] (default
        all frames); sound [C_s, T_s] (all noisy) with sound_timesteps; action [T_a, D] with
        action_domain (int) and action_noisy_frames. Position ids follow diffusers' pipeline
        (text, then media at text length + margin, fps-modulated) unless position_ids_override
        [3, S] is given. Returns {'vision': [1, C, T, H, W] (zeros on conditioning frames),
        'sound': [C_s, T_s] or None, 'action': [T_a, D] or None}."""
        cfg = self.config
        dtype = self.proj_in.weight.dtype
        dev = self.proj_in.weight.device
        U = int(input_ids.shape[0])
        tokens, grid, hw = self._patchify(vision.to(device=dev, dtype=dtype))
        per_frame = grid[1] * grid[2]
        noisy = (torch.arange(grid[0]) if vision_noisy_frames is None else torch.as_tensor(vision_noisy_frames)).long()
        tokens = self.proj_in(tokens)
        idx = self._noisy_token_index(noisy, per_frame, dev)
        tokens = tokens.index_add(0, idx, self._time(vision_timesteps, idx.numel(), dtype))
        parts = [tokens]
        Ts = Ta = 0
        if sound is not None:
            if not cfg.sound_gen:
                raise LayoutError("sound latents given, but this checkpoint has no sound heads (sound_gen=False)")
            Ts = sound.shape[1]
            s = self.audio_proj_in(sound.to(device=dev, dtype=dtype).T) + self.audio_modality_embed
            parts.append(s + self._time(sound_timesteps, Ts, dtype))
        if action is not None:
            if not cfg.action_gen:
                raise LayoutError("action tokens given, but this checkpoint has no action heads (action_gen=False)")
            Ta = action.shape[0]
            dom = torch.full((Ta,), int(action_domain), dtype=torch.long, device=dev)
            a = self.action_proj_in(action.to(device=dev, dtype=dtype), dom) + self.action_modality_embed
            a_noisy = (torch.arange(Ta) if action_noisy_frames is None else torch.as_tensor(action_noisy_frames)).long()
            if a_noisy.numel():
                a = a.index_add(0, a_noisy.to(dev), self._time(action_timesteps, a_noisy.numel(), dtype))
            parts.append(a)
        gen = torch.cat(parts)[None]
        layout = SequenceLayout(U, grid, Ts, Ta)
        pos = position_ids_override if position_ids_override is not None else position_ids(cfg, layout, fps)
        if pos.shape[-1] != layout.total:
            raise LayoutError(f"position ids cover {pos.shape[-1]} tokens, the sequence has {layout.total}")
        if text_cache is None:
            text_cache = self.encode_text(input_ids, pos[:, :U])
        elif text_cache.text_len != U:
            raise LayoutError(f"text_cache was built for {text_cache.text_len} text tokens, got {U}")
        cos, sin = rope_tables.to_cos_sin(self.rope_angles(pos[:, U:]), dev)
        G = gen.shape[1]
        sp = self._sp(G)
        if sp is not None:
            sh = sp.shard_inputs(SP_PLAN, rope=(cos, sin), media=gen)
            gen, (cos, sin) = sh["media"], sh["rope"]
        for layer, kv in zip(self.layers, text_cache.kv):
            gen = run_block(layer.gen, self.gradient_checkpointing, gen, (cos, sin), kv, sp)
        gen = self.norm_moe_gen(gen)
        if sp is not None:
            gen = sp.gather_outputs(SP_PLAN, media=gen)["media"]
        gen = gen[0]
        Nv = tokens.shape[0]
        out = {"vision": self._unpatchify(self.proj_out(gen[idx]), grid, hw, noisy.to(dev)),
               "sound": None, "action": None}
        if sound is not None:
            out["sound"] = self.audio_proj_out(gen[Nv:Nv + Ts]).T
        if action is not None:
            pred = gen.new_zeros(Ta, cfg.action_dim)
            if a_noisy.numel():
                rows = gen[Nv + Ts:][a_noisy.to(dev)]
                pred[a_noisy.to(dev)] = self.action_proj_out(rows, dom[: a_noisy.numel()])
            out["action"] = pred
        return out
