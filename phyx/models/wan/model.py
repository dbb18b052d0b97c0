"""The Wan2.1 / Wan2.2 DiT (and LingBot-World's camera-controlled variant) on phyx.ops.

Module and parameter names follow the official Wan checkpoints, so official keys load as they
are; diffusers keys are renamed in keys.py. Precision follows upstream Wan under bf16 autocast:
- sinusoidal time embedding and RoPE angles are built on the host in float64, applied in fp32;
- the time MLP, time projection and all modulation tables are kept in fp32 (`keep_fp32`);
- the residual stream is fp32 (upstream's `x + y * e[2]` promotes it); each sub-layer input is
  normalised and modulated in fp32 and rounded to the weight dtype right before its matmuls;
- the head (norm, modulation, linear) runs in fp32.
Parallelism is declared in plan.py (TP_PLAN, SP_PLAN): the model is built single-device and
phyx.parallel.parallelize swaps in the TP layers; heads per rank follow from the layers' shapes.
Sequence parallelism (Ulysses, ring or USP) goes through one phyx.parallel.SequenceParallel.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from phyx import ops
from phyx.errors import LayoutError
from phyx.models.activation_checkpointing import CheckpointingMixin, run_block
from phyx.models.layers import RMSWeight
from phyx.models.wan.config import WanConfig
from phyx.models.wan.plan import SP_PLAN, TP_PLAN
from phyx.ops import rope_tables
from phyx.parallel import (
    ParallelState,
    SequenceParallel,
    check_layout,
    get_parallel_state,
    parallelize,
    running_state,
)

# Parameters kept in fp32 whatever the model dtype (upstream computes them under fp32 autocast).
FP32_PARAM_PREFIXES = ("time_embedding.", "time_projection.", "head.modulation")
FP32_PARAM_SUFFIXES = (".modulation",)


def keep_fp32(name: str) -> bool:
    return name.startswith(FP32_PARAM_PREFIXES) or name.endswith(FP32_PARAM_SUFFIXES)


def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """Upstream Wan's time embedding [cos | sin](t * 10000^(-j/half)), on the host in float64."""
    half = dim // 2
    pos = t.detach().to(device="cpu", dtype=torch.float64).flatten()
    freqs = torch.pow(torch.tensor(10000.0, dtype=torch.float64),
                      -torch.arange(half, dtype=torch.float64) / half)
    s = torch.outer(pos, freqs)
    return torch.cat([torch.cos(s), torch.sin(s)], dim=1)


def _linear_fp32(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    b = layer.bias.float() if layer.bias is not None else None
    return F.linear(x.float(), layer.weight.float(), b)


class GeluTanh(nn.Module):
    def forward(self, x):
        return ops.gelu(x, approximate="tanh")


class Gelu(nn.Module):
    def forward(self, x):
        return ops.gelu(x, approximate="none")


class SiLU(nn.Module):
    def forward(self, x):
        return ops.silu(x)


class FP32LayerNorm(nn.Module):
    """LayerNorm computed in fp32 (affine in fp32), result in the input dtype."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if affine else None

    def forward(self, x):
        return ops.layer_norm(x, self.weight, self.bias, self.eps)


class _WanAttention(nn.Module):
    """q / k / v / o projections and the all-heads QK-norm, shared by self- and cross-attention
    (official key names q, k, v, o, norm_q, norm_k). Single-device modules: TP comes from
    plan.TP_PLAN, and the head count from the projections' actual width."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        dim = cfg.dim
        self.head_dim = cfg.head_dim
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = self._qk_norm(cfg)
        self.norm_k = self._qk_norm(cfg)

    @staticmethod
    def _qk_norm(cfg: WanConfig) -> nn.Module:
        return RMSWeight(cfg.dim, cfg.eps) if cfg.qk_norm else nn.Identity()

    def _heads(self, t):
        return t.unflatten(-1, (-1, self.head_dim))


class WanSelfAttention(_WanAttention):
    def forward(self, x, cos, sin, sp: SequenceParallel | None = None):
        q = self._heads(self.norm_q(self.q(x)))
        k = self._heads(self.norm_k(self.k(x)))
        v = self._heads(self.v(x))
        q = ops.rope(q, cos, sin, style="adjacent")
        k = ops.rope(k, cos, sin, style="adjacent")
        out = ops.attention(q, k, v) if sp is None else sp.attention(q, k, v)
        return self.o(out.flatten(2))


class WanCrossAttention(_WanAttention):
    """Cross attention to the text tokens; with `image_branch`, Wan2.1 i2v's extra attention to
    CLIP tokens (k_img / v_img / norm_k_img) added before the output projection."""

    def __init__(self, cfg: WanConfig, image_branch: bool):
        super().__init__(cfg)
        dim = cfg.dim
        self.image_branch = image_branch
        if image_branch:
            self.k_img = nn.Linear(dim, dim)
            self.v_img = nn.Linear(dim, dim)
            self.norm_k_img = self._qk_norm(cfg)

    def forward(self, x, context, context_img=None):
        q = self._heads(self.norm_q(self.q(x)))
        k = self._heads(self.norm_k(self.k(context)))
        v = self._heads(self.v(context))
        out = ops.attention(q, k, v).flatten(2)
        if self.image_branch:
            if context_img is None:
                raise LayoutError("this Wan2.1 i2v model needs CLIP image features: pass clip_fea")
            k_img = self._heads(self.norm_k_img(self.k_img(context_img)))
            v_img = self._heads(self.v_img(context_img))
            out = out + ops.attention(q, k_img, v_img).flatten(2)
        return self.o(out)


class WanBlock(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        dim, eps = cfg.dim, cfg.eps
        self.eps = eps
        self.self_attn = WanSelfAttention(cfg)
        self.norm3 = FP32LayerNorm(dim, eps, affine=True) if cfg.cross_attn_norm else None
        self.cross_attn = WanCrossAttention(cfg, image_branch=cfg.image_dim is not None)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), GeluTanh(), nn.Linear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim ** 0.5)
        self.has_camera = cfg.camera_channels is not None
        if self.has_camera:  # LingBot-World's per-block camera injector (replicated under TP)
            self.cam_injector_layer1 = nn.Linear(dim, dim)
            self.cam_injector_layer2 = nn.Linear(dim, dim)
            self.cam_scale_layer = nn.Linear(dim, dim)
            self.cam_shift_layer = nn.Linear(dim, dim)

    def forward(self, x, e0, cos, sin, sp, context, context_img, cam):
        """x [B, S, C] fp32; e0 [B, 1|S, 6, C] fp32; cam [B, S, C] or None; sp: the forward's
        SequenceParallel, or None on one device."""
        wdt = self.ffn[0].weight.dtype
        mod = (self.modulation.float().unsqueeze(0) + e0).unbind(2)   # six [B, 1|S, C], fp32
        shift, scale, gate, c_shift, c_scale, c_gate = mod
        h = ops.norm_modulate(x, shift, scale, self.eps, out_dtype=wdt)
        # the fp32 residual takes the bf16 branch outputs as they are: x + y * gate promotes y
        # to fp32 inside the op, bit for bit what an explicit y.float() copy would give
        x = ops.gated_residual(x, self.self_attn(h, cos, sin, sp), gate)
        if cam is not None:
            if not self.has_camera:
                raise LayoutError("camera input given to a model without camera layers "
                                  "(not a LingBot-World checkpoint)")
            hid = self.cam_injector_layer2(ops.silu(self.cam_injector_layer1(cam))) + cam
            x = ops.modulate(x, self.cam_shift_layer(hid).float(), self.cam_scale_layer(hid).float())
        h = (self.norm3(x) if self.norm3 is not None else x).to(wdt)
        x = x + self.cross_attn(h, context, context_img)
        h = ops.norm_modulate(x, c_shift, c_scale, self.eps, out_dtype=wdt)
        return ops.gated_residual(x, self.ffn(h), c_gate)


class Head(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.eps = cfg.eps
        self.head = nn.Linear(cfg.dim, math.prod(cfg.patch_size) * cfg.out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim ** 0.5)

    def forward(self, x, e):
        """x [B, S, C] fp32, e [B, 1|S, C] fp32 -> [B, S, prod(patch) * out_dim] fp32."""
        m = self.modulation.float().unsqueeze(0) + e.unsqueeze(2)       # [B, 1|S, 2, C]
        h = ops.norm_modulate(x, m[:, :, 0], m[:, :, 1], self.eps)
        return _linear_fp32(self.head, h)


class ImageProjection(nn.Module):
    """Wan2.1 i2v: CLIP features [B, 257, 1280] -> context tokens (LN, Linear, GELU, Linear, LN)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Sequential(FP32LayerNorm(in_dim, 1e-5), nn.Linear(in_dim, in_dim), Gelu(),
                                  nn.Linear(in_dim, out_dim), FP32LayerNorm(out_dim, 1e-5))

    def forward(self, x):
        return self.proj(x)


class WanModel(CheckpointingMixin, nn.Module):
    """forward(x, t, context, y=None, clip_fea=None, cam=None) -> [B, out_dim, F, H, W] fp32.

    x [B, C, F, H, W] noisy latent; y [B, Cy, F, H, W] i2v conditioning concatenated on channels
    (C + Cy = in_dim); t [B] or per-token [B, f*h*w] (Wan2.2 TI2V); context [B, Lt <= text_len,
    text_dim] (zero-padded to text_len as upstream); clip_fea [B, 257, image_dim] for Wan2.1 i2v;
    cam [B, camera_channels*64, F, H, W] LingBot-World camera embedding (see phyx.models.wan.camera).
    """

    def __init__(self, cfg: WanConfig, parallel: ParallelState | None = None):
        """parallel: the layout to build for (default: the current phyx.parallel state); a model
        built for one device runs anywhere, e.g. as the reference on every rank."""
        super().__init__()
        self.cfg = cfg
        st = parallel if parallel is not None else get_parallel_state()
        self.layout = st.config          # the ParallelConfig this model was built for
        check_layout(cfg.num_heads, cfg.num_heads, st.config, "Wan")
        dim = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, dim), GeluTanh(), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList([WanBlock(cfg) for _ in range(cfg.num_layers)])
        self.head = Head(cfg)
        if cfg.image_dim is not None:
            self.img_emb = ImageProjection(cfg.image_dim, dim)
        if cfg.camera_channels is not None:
            self.patch_embedding_wancamctrl = nn.Linear(cfg.camera_in_features, dim)
            self.c2ws_hidden_states_layer1 = nn.Linear(dim, dim)
            self.c2ws_hidden_states_layer2 = nn.Linear(dim, dim)
        parallelize(self, TP_PLAN, st)

    # ---- dtype ---------------------------------------------------------------------------
    def cast(self, dtype: torch.dtype) -> "WanModel":
        """Convert weights to `dtype`, keeping the time MLP and modulation tables in fp32."""
        for name, p in self.named_parameters():
            p.data = p.data.to(torch.float32 if keep_fp32(name) else dtype)
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embedding.weight.dtype

    # ---- pieces --------------------------------------------------------------------------
    def _grid(self, x):
        B, C, Fr, H, W = x.shape
        pt, ph, pw = self.cfg.patch_size
        if Fr % pt or H % ph or W % pw:
            raise LayoutError(f"latent size (F={Fr}, H={H}, W={W}) is not divisible by the patch size "
                              f"{self.cfg.patch_size}; resize or pad the latent")
        return Fr // pt, H // ph, W // pw

    def time_embed(self, t: torch.Tensor, batch: int, seq_len: int):
        """-> (e [B, 1|L, C], per_token) in fp32, sinusoid built on the host in float64."""
        t = torch.as_tensor(t)
        if t.dim() == 0:
            t = t.expand(batch)
        if t.dim() == 1:
            if t.shape[0] != batch:
                raise LayoutError(f"timestep has {t.shape[0]} entries for batch {batch}")
            tok = 1
        elif t.dim() == 2:
            if tuple(t.shape) != (batch, seq_len):
                raise LayoutError(f"per-token timesteps must be [B, f*h*w] = [{batch}, {seq_len}], "
                                  f"got {tuple(t.shape)}")
            tok = seq_len
        else:
            raise LayoutError(f"timestep must be [B] or [B, L], got shape {tuple(t.shape)}")
        sin = sinusoidal_embedding(self.cfg.freq_dim, t).to(torch.float32)
        return sin.view(batch, tok, -1).to(self.patch_embedding.weight.device), tok > 1

    def camera_tokens(self, cam: torch.Tensor, grid) -> torch.Tensor:
        """cam [B, c*64, F, H, W] -> camera tokens [B, L, C] (LingBot's patch embedding + MLP)."""
        if self.cfg.camera_channels is None:
            raise LayoutError("camera input given to a model without camera layers")
        pt, ph, pw = self.cfg.patch_size
        f, h, w = grid
        B, C = cam.shape[:2]
        if tuple(cam.shape[2:]) != (f * pt, h * ph, w * pw) or C * pt * ph * pw != self.cfg.camera_in_features:
            raise LayoutError(f"camera embedding {tuple(cam.shape)} does not fit the latent grid "
                              f"{(f * pt, h * ph, w * pw)} with {self.cfg.camera_in_features // (pt * ph * pw)} "
                              f"channels; build it with phyx.models.wan.camera.prepare_camera")
        # 'b c (f p) (h q) (w r) -> b (f h w) (c p q r)'
        c = cam.to(self.dtype).reshape(B, C, f, pt, h, ph, w, pw).permute(0, 2, 4, 6, 1, 3, 5, 7)
        c = self.patch_embedding_wancamctrl(c.reshape(B, f * h * w, -1))
        return c + self.c2ws_hidden_states_layer2(ops.silu(self.c2ws_hidden_states_layer1(c)))

    def embed_context(self, context, clip_fea):
        B, Lt, Dt = context.shape
        if Dt != self.cfg.text_dim or Lt > self.cfg.text_len:
            raise LayoutError(f"text context {tuple(context.shape)} must be [B, <= {self.cfg.text_len}, "
                              f"{self.cfg.text_dim}]")
        if Lt < self.cfg.text_len:  # upstream zero-pads to text_len and attends to all of it
            context = torch.cat([context, context.new_zeros(B, self.cfg.text_len - Lt, Dt)], dim=1)
        ctx = self.text_embedding(context.to(self.dtype))
        ctx_img = None
        if clip_fea is not None:
            if self.cfg.image_dim is None:
                raise LayoutError("clip_fea given to a model without the Wan2.1 image branch")
            ctx_img = self.img_emb(clip_fea.to(self.dtype))
        return ctx, ctx_img

    def unpatchify(self, out, grid):
        B = out.shape[0]
        f, h, w = grid
        pt, ph, pw = self.cfg.patch_size
        c = self.cfg.out_dim
        out = out.view(B, f, h, w, pt, ph, pw, c).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return out.reshape(B, c, f * pt, h * ph, w * pw)

    # ---- forward -------------------------------------------------------------------------
    def forward(self, x, t, context, y=None, clip_fea=None, cam=None):
        if y is not None:
            x = torch.cat([x, y.to(x.dtype)], dim=1)
        if x.dim() != 5 or x.shape[1] != self.cfg.in_dim:
            raise LayoutError(f"latent input must be [B, {self.cfg.in_dim}, F, H, W] (noise and, for i2v, "
                              f"the conditioning y concatenated on channels); got {tuple(x.shape)}")
        grid = self._grid(x)
        B, L = x.shape[0], math.prod(grid)
        # [B, C, S] -> [B, S, C] made contiguous here, once: a transposed residual stream would
        # make every later norm copy it and every add take torch's slow strided path
        tokens = self.patch_embedding(x.to(self.dtype)).flatten(2).transpose(1, 2)
        tokens = tokens.contiguous().float()

        sin_t, per_token = self.time_embed(t, B, L)
        cos, sin = rope_tables.to_cos_sin(rope_tables.wan_3d(grid, self.cfg.head_dim, max_len=self.cfg.rope_max_len),
                                          tokens.device)
        cam_tok = self.camera_tokens(cam, grid) if cam is not None else None

        # SP: pad + shard everything that is per token (SP_PLAN), exactly like the tokens.
        sp = SequenceParallel(L, running_state(self.layout))
        if sp.active:
            sh = sp.shard_inputs(SP_PLAN, rope=(cos, sin), tokens=tokens, camera=cam_tok,
                                 timestep=sin_t if per_token else None)
            tokens, cam_tok, (cos, sin) = sh["tokens"], sh["camera"], sh["rope"]
            sin_t = sh["timestep"] if per_token else sin_t

        e = _linear_fp32(self.time_embedding[2], ops.silu(_linear_fp32(self.time_embedding[0], sin_t)))
        e0 = _linear_fp32(self.time_projection[1], ops.silu(e)).unflatten(-1, (6, self.cfg.dim))
        context, context_img = self.embed_context(context, clip_fea)

        for block in self.blocks:
            tokens = run_block(block, self.gradient_checkpointing, tokens, e0, cos, sin,
                               sp if sp.active else None, context, context_img, cam_tok)
        out = self.head(tokens, e)
        if sp.active:
            out = sp.gather_outputs(SP_PLAN, out=out)["out"]
        return self.unpatchify(out, grid)
