"""Parity specs for the real world models on their tiny seeded configs: Wan2.x t2v / i2v / ti2v,
LingBot-World (camera control), Cosmos-Predict2 Text2Image / Video2World, Cosmos3 video and
video + sound. `phyx parity record --model tiny-wan-t2v` (etc.) and run_model_parity use them.

Same inputs on both sides: every tensor that enters the DiT (noise, clean latents, conditioning
latents, text embeddings and masks, camera embeddings, sigmas) is drawn on the CPU from the seed;
timesteps and sigmas are float64 on the CPU and enter the models there (the models build their
sinusoids and RoPE angles on the host). Weights are drawn from a seeded generator for the full
(tp = 1) model and sliced into a TP model when one is built under a parallel state.

Each spec also carries its training loss (LossSpec) for loss parity: the Wan flow-matching loss
and the Cosmos-Predict2 EDM-weighted loss, with data order, noise and sigmas drawn on the CPU
from (seed, step) so RNG consumption is the same whatever the backend.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from phyx.tools.parity.model import LossSpec, ModelSpec, register_model

ROPE_PROBE = {"rope_tables": "phyx.ops.rope_tables:to_cos_sin"}
DATASET = 4        # fixed training set size for loss parity; each step draws a batch of 2


def _gen(seed: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + salt)


def _to(device, t):
    return t.to(device) if isinstance(t, torch.Tensor) else t


def _batch_order(seed: int, step: int, batch: int) -> tuple[torch.Generator, torch.Tensor]:
    """A generator for this step's draws and the data order (indices into the fixed set)."""
    g = _gen(seed, 10_000 + step)
    return g, torch.randperm(DATASET, generator=g)[:batch]


# ============================================================================================ Wan
WAN = {"tiny-wan-t2v": "t2v", "tiny-wan-i2v": "i2v", "tiny-wan-ti2v": "ti2v", "tiny-lingbot": "lingbot"}
WAN_LATENT = (3, 6, 10)      # (F, H, W): patch grid 3 x 3 x 5 = 45 tokens (odd: SP pads)
WAN_BATCH = 2
WAN_TEXT = 12                # < text_len 16: the model zero-pads the context as upstream does
WAN_LAYERS = ("patch_embedding", "patch_embedding_wancamctrl", "text_embedding", "blocks.*",
              "blocks.*.self_attn", "blocks.*.self_attn.q", "blocks.*.self_attn.norm_q",
              "blocks.*.cross_attn", "blocks.*.ffn", "blocks.*.ffn.0", "blocks.*.ffn.2", "head")


def _wan_config(variant: str, config: dict):
    """`config`: overrides of the tiny config, or a recorded spec config ({'wan': {...}, ...}),
    so `phyx parity compare A --live` rebuilds exactly what A recorded."""
    from phyx.models.wan import WanConfig, get_config
    from phyx.models.wan.loading import TINY_VARIANTS

    if "wan" in config:
        return WanConfig.from_dict(config["wan"])
    cfg = get_config(TINY_VARIANTS[variant])
    return cfg.replace(**config) if config else cfg


def build_wan(cfg, seed: int):
    """Seeded full weights; under TP / SP a model for the current layout holding its slices."""
    from phyx.models.wan import seeded_model
    from phyx.models.wan._parallel import Layout, current_layout
    from phyx.models.wan.model import WanModel
    from phyx.parallel import load_full_state_dict

    full = seeded_model(cfg, seed)
    lay = current_layout()
    if lay == Layout():
        return full
    with torch.random.fork_rng(devices=[]):   # init draws must not move the caller's RNG
        model = WanModel(cfg, lay)
    load_full_state_dict(model, full.state_dict())
    return model.eval()


def _wan_prepare(model, device, dtype):
    return model.to(device).cast(dtype)      # time MLP and modulation stay fp32, as upstream


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


def _wan_inputs(cfg, variant: str, seed: int) -> dict:
    g = _gen(seed)
    F_, H, W = WAN_LATENT
    B = WAN_BATCH
    inp = {"x": torch.randn(B, cfg.out_dim, F_, H, W, generator=g),
           "context": torch.randn(B, WAN_TEXT, cfg.text_dim, generator=g)}
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


def wan_forward(model, inputs: dict, device, dtype):
    """One denoising step at the DiT boundary: latents, text embeddings, conditioning and camera
    embeddings injected as given (the model casts to its dtype where upstream does)."""
    kw = {k: _to(device, inputs[k]) for k in ("y", "cam") if k in inputs}
    return model(_to(device, inputs["x"]), inputs["t"], _to(device, inputs["context"]), **kw)


def wan_flow_batch(inputs: dict, step: int, seed: int = 0) -> dict:
    """Wan flow matching: x_t = (1 - s) x0 + s eps, target eps - x0, t = 1000 s; data order, eps
    and s (float64) drawn on the CPU from (seed, step)."""
    g, idx = _batch_order(seed, step, WAN_BATCH)
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


def wan_flow_loss(model, batch: dict, device, dtype, forward) -> torch.Tensor:
    pred = forward(model, batch, device, dtype)
    return torch.mean((pred.float() - batch["target"].to(device).float()) ** 2)


def _wan_train_inputs(cfg, variant: str, seed: int) -> dict:
    """The fixed data set: DATASET clean latents with their conditioning."""
    sets = [_wan_inputs(cfg, variant, seed * 31 + i) for i in range(DATASET // WAN_BATCH)]
    out = {k: torch.cat([s[k] for s in sets]) for k in sets[0] if k != "x"}
    out["data"] = torch.cat([s["x"] for s in sets])
    return out


def _wan_spec(name: str, variant: str):
    def factory(config: dict, seed: int) -> ModelSpec:
        cfg = _wan_config(variant, config)
        spec = ModelSpec(
            name, build=lambda: build_wan(cfg, seed), make_inputs=lambda s: _wan_inputs(cfg, variant, s),
            forward=wan_forward, config={"wan": cfg.to_dict(), "latent": list(WAN_LATENT),
                                         "batch": WAN_BATCH, "text_tokens": WAN_TEXT},
            layers=WAN_LAYERS, seed=seed, functions=dict(ROPE_PROBE), prepare=_wan_prepare,
            loss=LossSpec(wan_flow_batch, wan_flow_loss, "wan flow matching"),
            train_inputs=lambda s: _wan_train_inputs(cfg, variant, s))
        return spec
    return factory


# =============================================================================== Cosmos-Predict2
PREDICT2 = {"tiny-cosmos-predict2-t2i": "text2image", "tiny-cosmos-predict2-v2w": "video2world"}
P2_LATENT = {"text2image": (1, 8, 10), "video2world": (3, 6, 10)}
P2_TEXT = 12
P2_LAYERS = ("patch_embed.proj", "time_embed", "transformer_blocks.*", "transformer_blocks.*.attn1",
             "transformer_blocks.*.attn2", "transformer_blocks.*.ff", "proj_out")


def _p2_config(variant: str, config: dict):
    from phyx.models.cosmos_predict2.config import Predict2Config
    from phyx.models.cosmos_predict2.tiny import tiny_config

    if "predict2" in config:  # a recorded spec config
        return Predict2Config.from_dict(config["predict2"])
    return tiny_config(variant, **config)


def _p2_model(cfg, seed: int):
    from phyx.models.cosmos_predict2.model import Predict2DiT
    from phyx.models.cosmos_predict2.tiny import randomize_

    with torch.random.fork_rng(devices=[]):
        model = Predict2DiT(cfg)
    randomize_(model, seed)
    return model.eval()


def _p2_inputs(cfg, variant: str, seed: int) -> dict:
    from phyx.models.cosmos_predict2.diffusion import sample_training_sigma

    g = _gen(seed)
    T, H, W = P2_LATENT[variant]
    B = 2
    x0 = torch.randn(B, cfg.out_channels, T, H, W, generator=g)
    noise = torch.randn(B, cfg.out_channels, T, H, W, generator=g)
    sigma = sample_training_sigma(B, g)               # float64 on the host
    lens = torch.tensor([P2_TEXT, P2_TEXT - 5])
    return {"x0": x0, "noise": noise, "sigma": sigma,
            "text": torch.randn(B, P2_TEXT, cfg.text_embed_dim, generator=g),
            # bool keep-mask over the T5 tokens: the path where the NPU's inverted mask matters
            "text_mask": torch.arange(P2_TEXT)[None] < lens[:, None]}


def _p2_kwargs(model, inputs, device):
    kw = {"text_mask": _to(device, inputs["text_mask"])}
    if model.config.video2world:
        kw.update(cond_latents=_to(device, inputs["x0"]), num_conditional_frames=1)
    return kw


def predict2_forward(model, inputs: dict, device, dtype):
    """One teacher-forced step: x_t = x0 + sigma eps formed on the host, x0 prediction."""
    from phyx.models.cosmos_predict2.diffusion import denoise

    s = inputs["sigma"].to(torch.float32).view(-1, 1, 1, 1, 1)
    x_t = inputs["x0"] + s * inputs["noise"]
    return denoise(model, _to(device, x_t), inputs["sigma"], _to(device, inputs["text"]),
                   **_p2_kwargs(model, inputs, device))


def predict2_batch(inputs: dict, step: int, seed: int = 0) -> dict:
    """Cosmos-Predict2 training draws: data order, sigma = exp(N(0,1)) (float64) and eps, all on
    the CPU from (seed, step)."""
    from phyx.models.cosmos_predict2.diffusion import sample_training_sigma

    g, idx = _batch_order(seed, step, 2)
    x0 = inputs["data"][idx]
    sigma = sample_training_sigma(len(idx), g)
    noise = torch.randn(x0.shape, generator=g)
    return {"x0": x0, "noise": noise, "sigma": sigma, "text": inputs["text"][idx],
            "text_mask": inputs["text_mask"][idx]}


def predict2_loss(model, batch: dict, device, dtype, forward) -> torch.Tensor:
    from phyx.models.cosmos_predict2.diffusion import training_loss

    out = training_loss(model, _to(device, batch["x0"]), _to(device, batch["text"]), batch["sigma"],
                        _to(device, batch["noise"]), **_p2_kwargs(model, batch, device))
    return out["loss"]


def _p2_train_inputs(cfg, variant, seed):
    sets = [_p2_inputs(cfg, variant, seed * 31 + i) for i in range(DATASET // 2)]
    return {"data": torch.cat([s["x0"] for s in sets]), "text": torch.cat([s["text"] for s in sets]),
            "text_mask": torch.cat([s["text_mask"] for s in sets])}


def _p2_spec(name: str, variant: str):
    def factory(config: dict, seed: int) -> ModelSpec:
        cfg = _p2_config(variant, config)
        spec = ModelSpec(
            name, build=lambda: _p2_model(cfg, seed),
            make_inputs=lambda s: _p2_inputs(cfg, variant, s), forward=predict2_forward,
            config={"predict2": cfg.to_diffusers_dict(), "latent": list(P2_LATENT[variant])},
            layers=P2_LAYERS, seed=seed, functions=dict(ROPE_PROBE),
            loss=LossSpec(predict2_batch, predict2_loss, "cosmos-predict2 EDM loss"),
            train_inputs=lambda s: _p2_train_inputs(cfg, variant, s))
        return spec
    return factory


# ======================================================================================== Cosmos3
COSMOS3 = {"tiny-cosmos3-video": False, "tiny-cosmos3-video-sound": True}
C3_VISION = (3, 4, 6)        # latent (T, H, W): 2x2 patches -> 3 x 2 x 3 = 18 tokens
C3_TEXT = 7
C3_SOUND = 5
C3_LAYERS = ("proj_in", "time_embedder", "audio_proj_in", "layers.*:und", "layers.*:gen",
             "layers.*.self_attn:und", "layers.*.self_attn:gen", "layers.*.mlp", "layers.*.mlp_moe_gen",
             "norm_moe_gen", "proj_out", "audio_proj_out")


def _c3_config(config: dict):
    from phyx.models.cosmos3.config import Cosmos3Config
    from phyx.models.cosmos3.tiny import tiny_config

    if "cosmos3" in config:  # a recorded spec config
        return Cosmos3Config.from_dict(config["cosmos3"])
    return tiny_config(**config)


def _c3_model(cfg, seed: int):
    from phyx.models.cosmos3.model import Cosmos3Omni
    from phyx.models.cosmos_predict2.tiny import randomize_

    with torch.random.fork_rng(devices=[]):
        model = Cosmos3Omni(cfg)
    randomize_(model, seed)
    return model.eval()


def _c3_inputs(cfg, sound: bool, seed: int) -> dict:
    g = _gen(seed)
    T, H, W = C3_VISION
    p = cfg.latent_patch_size
    noisy_tokens = (T - 1) * (H // p) * (W // p)         # frame 0 is the clean conditioning frame
    inp = {"input_ids": torch.randint(0, cfg.vocab_size, (C3_TEXT,), generator=g),
           "vision": torch.randn(cfg.latent_channel, T, H, W, generator=g),
           "vision_noisy_frames": torch.arange(1, T),
           "vision_timesteps": torch.full((noisy_tokens,), 700.0, dtype=torch.float64)}
    if sound:
        inp["sound"] = torch.randn(cfg.sound_dim, C3_SOUND, generator=g)
        inp["sound_timesteps"] = torch.full((C3_SOUND,), 700.0, dtype=torch.float64)
    return inp


def cosmos3_forward(model, inputs: dict, device, dtype):
    kw = {}
    if "sound" in inputs:
        kw = {"sound": _to(device, inputs["sound"]), "sound_timesteps": inputs["sound_timesteps"]}
    out = model(_to(device, inputs["input_ids"]), _to(device, inputs["vision"]), inputs["vision_timesteps"],
                vision_noisy_frames=inputs["vision_noisy_frames"], **kw)
    return {k: v for k, v in out.items() if v is not None}


def _c3_spec(name: str, sound: bool):
    def factory(config: dict, seed: int) -> ModelSpec:
        cfg = _c3_config(config)
        return ModelSpec(name, build=lambda: _c3_model(cfg, seed),
                         make_inputs=lambda s: _c3_inputs(cfg, sound, s), forward=cosmos3_forward,
                         config={"cosmos3": cfg.to_diffusers_dict(), "vision": list(C3_VISION),
                                 "text_tokens": C3_TEXT, "sound": C3_SOUND if sound else 0},
                         layers=C3_LAYERS, seed=seed, functions=dict(ROPE_PROBE))
    return factory


for _n, _v in WAN.items():
    register_model(_n, _wan_spec(_n, _v))
for _n, _v in PREDICT2.items():
    register_model(_n, _p2_spec(_n, _v))
for _n, _v in COSMOS3.items():
    register_model(_n, _c3_spec(_n, _v))

MODELS = tuple(WAN) + tuple(PREDICT2) + tuple(COSMOS3)
