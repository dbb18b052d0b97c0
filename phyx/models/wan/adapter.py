"""Wan2.x / LingBot-World behind the FamilyAdapter contract (phyx.models.family).

Its parity / oracle case: one teacher-forced DiT step on a 3 x 6 x 10 latent (45 tokens: odd, so
SP pads), batch 2, 12 text tokens (< text_len: the model zero-pads the context as upstream does);
timesteps float64 on the host; i2v conditioning, per-token timesteps (ti2v) and LingBot camera
embeddings drawn on the CPU from the seed. Its training loss is Wan's flow matching.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from phyx.models.common.inputs import DATASET, batch_order, gen
from phyx.models.common.inputs import to as _to
from phyx.models.family import DiffusersPeer, FamilyAdapterBase, TrainingLoss

LATENT = (3, 6, 10)          # (F, H, W): patch grid 3 x 3 x 5 = 45 tokens (odd: SP pads)
BATCH = 2
TEXT = 12
LAYERS = ("patch_embedding", "patch_embedding_wancamctrl", "text_embedding", "blocks.*",
          "blocks.*.self_attn", "blocks.*.self_attn.q", "blocks.*.self_attn.norm_q",
          "blocks.*.cross_attn", "blocks.*.ffn", "blocks.*.ffn.0", "blocks.*.ffn.2", "head")


def seeded_camera(seed: int, frames: int, height: int, width: int) -> torch.Tensor:
    """LingBot-World camera embedding [1, 384, lat_f, lat_h, lat_w] of a seeded smooth trajectory,
    through the real camera path (phyx.models.wan.camera.prepare_camera)."""
    from phyx.models.wan.camera import prepare_camera, quat_to_matrix, rotvec_to_quat

    rng = np.random.default_rng(seed)
    step_rot = rng.normal(0, 0.05, 3)
    step_t = rng.normal(0, 0.2, 3)
    poses = np.tile(np.eye(4), (frames, 1, 1))
    for i in range(frames):
        poses[i, :3, :3] = quat_to_matrix(rotvec_to_quat(step_rot * i))
        poses[i, :3, 3] = step_t * i
    K = np.array([[400.0, 400.0, 416.0, 240.0]])
    return prepare_camera(K, poses, height, width, frame_num=frames).embedding


class WanAdapter(FamilyAdapterBase):
    name = "wan"
    capture_layers = LAYERS
    pipeline = "phyx.pipelines.families.wan"
    LAYERS_FIELD, HEADS_FIELD = "num_layers", "num_heads"

    def __init__(self):
        from phyx.models.wan.config import CONFIGS, WanConfig

        self.config_class = WanConfig
        self.configs = {k: v for k, v in CONFIGS.items() if not k.startswith("tiny-")}
        self.tiny_configs = {k: v for k, v in CONFIGS.items() if k.startswith("tiny-")}

    # ---- building / checkpoints ------------------------------------------------------------------
    def construct(self, cfg):
        from phyx.models.wan.model import WanModel

        return WanModel(cfg)                 # layout from the current parallel state

    def keep_fp32(self, param_name: str) -> bool:
        from phyx.models.wan.model import keep_fp32

        return keep_fp32(param_name)

    def prepare(self, model, device, dtype):
        return model.to(device).cast(dtype)  # time MLP and modulation stay fp32, as upstream

    def detect(self, path: Path) -> bool:
        from phyx.models.wan.loading import detect

        return detect(Path(path))

    def load(self, path: Path, **kw):
        from phyx.models.wan.loading import load_wan

        return load_wan(path, **kw)

    def save(self, model, directory, fmt: str = "official", **kw) -> Path:
        from phyx.models.wan.loading import save_wan

        return save_wan(model, directory, fmt=fmt, **kw)

    # ---- one step ----------------------------------------------------------------------------------
    def make_inputs(self, cfg, seed: int, **opts) -> dict:
        g = gen(seed)
        F_, H, W = LATENT
        B = BATCH
        inp = {"x": torch.randn(B, cfg.out_dim, F_, H, W, generator=g),
               "context": torch.randn(B, TEXT, cfg.text_dim, generator=g)}
        # timesteps from the shifted flow-matching schedule (shift 5), float64 on the host
        s = torch.tensor([0.95, 0.4], dtype=torch.float64)
        t = 1000.0 * (5 * s / (1 + 4 * s))
        grid = (F_, H // cfg.patch_size[1], W // cfg.patch_size[2])
        if cfg.variant == "ti2v":  # per-token timesteps, the conditioning first frame at t = 0
            per_frame = grid[1] * grid[2]
            t = t[:, None].expand(B, math.prod(grid)).clone()
            t[:, :per_frame] = 0.0
        inp["t"] = t
        if cfg.in_dim != cfg.out_dim:  # i2v: [mask | first-frame latent] conditioning on channels
            y = torch.zeros(B, cfg.in_dim - cfg.out_dim, F_, H, W)
            y[:, :, 0] = torch.randn(B, cfg.in_dim - cfg.out_dim, H, W, generator=g)
            inp["y"] = y
        if cfg.camera_channels:
            cams = [seeded_camera(seed * 7 + i, 4 * (F_ - 1) + 1, H * 8, W * 8) for i in range(B)]
            inp["cam"] = torch.cat(cams)
        return inp

    def forward(self, model, inputs: dict, device=None, dtype=None):
        """One denoising step at the DiT boundary: latents, text embeddings, conditioning and
        camera embeddings injected as given (the model casts to its dtype where upstream does)."""
        kw = {k: _to(device, inputs[k]) for k in ("y", "cam") if k in inputs}
        return model(_to(device, inputs["x"]), inputs["t"], _to(device, inputs["context"]), **kw)

    # ---- training loss -----------------------------------------------------------------------------
    def loss(self, cfg, **opts) -> TrainingLoss:
        def train_inputs(seed: int) -> dict:
            sets = [self.make_inputs(cfg, seed * 31 + i) for i in range(DATASET // BATCH)]
            out = {k: torch.cat([s[k] for s in sets]) for k in sets[0] if k != "x"}
            out["data"] = torch.cat([s["x"] for s in sets])
            return out

        return TrainingLoss(flow_batch, flow_loss, train_inputs, "wan flow matching")

    # ---- diffusers -----------------------------------------------------------------------------------
    def diffusers_peer(self, cfg) -> DiffusersPeer:
        from phyx.models.wan.keys import official_to_diffusers
        from phyx.models.wan.loading import config_to_diffusers

        kw = config_to_diffusers(cfg)         # raises for LingBot's camera layers (none in diffusers)

        def build(dtype=torch.float32, device="cpu"):
            from diffusers import WanTransformer3DModel

            prev = torch.get_default_dtype()
            torch.set_default_dtype(dtype)
            try:
                with torch.device(device):
                    return WanTransformer3DModel(**kw)
            finally:
                torch.set_default_dtype(prev)

        def forward(m, inputs):
            x, ctx = inputs["x"], inputs["context"]
            if "y" in inputs:
                x = torch.cat([x, inputs["y"].to(x)], 1)
            pad = cfg.text_len - ctx.shape[1]        # upstream's zero padding to text_len
            if pad > 0:
                ctx = torch.cat([ctx, ctx.new_zeros(ctx.shape[0], pad, ctx.shape[2])], 1)
            t = torch.as_tensor(inputs["t"]).to(device=x.device, dtype=torch.float32)
            return m(hidden_states=x.to(m.dtype), timestep=t, encoder_hidden_states=ctx.to(m.dtype),
                     return_dict=False)[0]

        return DiffusersPeer(build, lambda sd: {official_to_diffusers(k): v for k, v in sd.items()}, forward)


def flow_batch(inputs: dict, step: int, seed: int = 0) -> dict:
    """Wan flow matching: x_t = (1 - s) x0 + s eps, target eps - x0, t = 1000 s; data order, eps
    and s (float64) drawn on the CPU from (seed, step)."""
    g, idx = batch_order(seed, step, BATCH)
    x0 = inputs["data"][idx]
    noise = torch.randn(x0.shape, generator=g)
    s = torch.rand(x0.shape[0], generator=g, dtype=torch.float64)
    sf = s.to(torch.float32).view(-1, 1, 1, 1, 1)
    batch = {k: v[idx] for k, v in inputs.items() if k in ("context", "y", "cam")}
    t = s * 1000.0
    if inputs["t"].dim() == 2:   # ti2v: per-token timesteps, conditioning frame at 0
        t = t[:, None].expand_as(inputs["t"][idx]).clone()
        t[inputs["t"][idx] == 0] = 0.0
    return {**batch, "x": (1 - sf) * x0 + sf * noise, "t": t, "target": noise - x0}


def flow_loss(model, batch: dict, device, dtype, forward) -> torch.Tensor:
    pred = forward(model, batch, device, dtype)
    return torch.mean((pred.float() - batch["target"].to(device).float()) ** 2)
