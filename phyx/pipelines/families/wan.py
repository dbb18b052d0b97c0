"""Wan2.2 (TI2V-5B, A14B T2V / I2V) and LingBot-World in the pipeline.

Conditioning, as upstream Wan2.2 prepares it:
- t2v: noise only;
- i2v (A14B, LingBot-World): y = [mask (4 ch) | VAE latent of (first frame, then zeros)]
  concatenated to the noise on channels; the mask marks the first 4 pixel frames (= the first
  latent frame);
- ti2v (5B) with an image: the first latent frame is the image latent, re-imposed after every
  step, and those tokens get timestep 0 (per-token timesteps);
- LingBot-World: the camera embedding from phyx.models.wan.camera, given to both CFG branches;
- A14B: the high-noise expert for t >= boundary * 1000 with its own guidance scale.
"""
from __future__ import annotations

from pathlib import Path

import torch

from phyx.errors import CheckpointError
from phyx.pipelines import protocol
from phyx.pipelines import vae as vae_mod

PATCH = (1, 2, 2)


def dit_dir(ckpt: Path) -> Path:
    """The DiT directory: the checkpoint root when it is itself a Wan checkpoint (official
    A14B layout, or transformer/ + transformer_2/ experts), else ckpt/transformer."""
    from phyx.models.wan import checkpoint_format

    if checkpoint_format(ckpt) is not None:
        return ckpt
    return ckpt / "transformer"


def required_parts(ckpt: Path, spec) -> list[tuple[Path, str]]:
    parts = [(ckpt / "vae", "the VAE (diffusers AutoencoderKLWan: config.json + safetensors)"),
             (ckpt / "text_encoder", "the UMT5 text encoder (transformers, safetensors)"),
             (ckpt / "tokenizer", "the tokenizer files")]
    if spec.moe:
        from phyx.models.wan import checkpoint_format
        if checkpoint_format(ckpt) != "moe":
            parts.append((ckpt / "transformer_2", "the low-noise expert (A14B needs transformer/ and "
                                                  "transformer_2/, or high_noise_model/ and low_noise_model/)"))
    parts.insert(0, (dit_dir(ckpt), "the DiT (transformer/ with config.json + safetensors)"))
    return parts


def load_dit(ckpt: Path, spec, dtype, device):
    from phyx.models.wan import load_wan

    path = dit_dir(ckpt)
    # the model's upstream expert switch (registry); None keeps the checkpoint's own (model_index.json)
    model = load_wan(path, dtype=dtype, device=device, boundary=spec.boundary if spec.moe else None)
    if spec.moe != hasattr(model, "expert_for"):
        raise CheckpointError(f"{spec.name} expects {'two experts' if spec.moe else 'one DiT'} but {path} "
                              f"holds {'two' if hasattr(model, 'expert_for') else 'one'}")
    return model


def _i2v_mask(frames: int, lat_shape) -> torch.Tensor:
    """[1, 4, T, h, w]: 1 on the first pixel frame (repeated 4x, as upstream) and 0 elsewhere."""
    _, _, T, h, w = lat_shape
    m = torch.zeros(1, frames, h, w)
    m[:, 0] = 1
    m = torch.cat([m[:, :1].repeat_interleave(4, dim=1), m[:, 1:]], dim=1)
    return m.view(1, T, 4, h, w).transpose(1, 2)


class Denoiser(protocol.Denoiser):
    def __init__(self, run, model):
        from phyx.parallel import get_parallel_state

        self.run, self.model = run, model
        cfg = model.cfg
        self.cfg = cfg
        z = cfg.out_dim
        if run.vae.config.z_dim != z:
            raise CheckpointError(f"the VAE has {run.vae.config.z_dim} latent channels but the DiT "
                                  f"expects {z}; the checkpoint parts do not belong together")
        if cfg.patch_size != PATCH:
            raise CheckpointError(f"unexpected Wan patch size {cfg.patch_size}")
        self.state = get_parallel_state()
        self.mode = "ti2v" if cfg.variant == "ti2v" else "concat" if cfg.in_dim != cfg.out_dim else "plain"
        if run.task == "i2v" and self.mode == "plain":
            raise CheckpointError(f"{run.checkpoint} is a text-to-video DiT (in_dim {cfg.in_dim}); i2v "
                                  f"needs an image-conditioned checkpoint")
        if self.mode == "concat" and run.task != "i2v":
            raise CheckpointError("this DiT is image-conditioned (i2v); pass --image")
        if run.camera_embedding is not None and cfg.camera_channels is None:
            raise CheckpointError("--camera given but the DiT has no camera layers (LingBot-World has)")
        if run.camera_embedding is None and cfg.camera_channels is not None:
            raise CheckpointError("this DiT is camera-controlled (LingBot-World): pass --camera DIR")
        dev = run.device
        self.both = self.state.cfg_size == 2 or run.guidance != 1.0 or (run.guidance_high or 1.0) != 1.0
        self.ctx = run.text.to(dev)
        self.neg = run.neg_text.to(dev)
        self.y = self.cam = self.first = self.keep = None
        lat = run.latent_shape
        if self.mode == "concat":
            px = run.cond_pixels  # [3, F, H, W] first frame then zeros
            video = torch.cat([px[:, :1], torch.zeros_like(px[:, :1]).expand(-1, run.frames - 1, -1, -1)], 1)
            cond = vae_mod.encode(run.vae, video.unsqueeze(0).to(dev))
            self.y = torch.cat([_i2v_mask(run.frames, lat).to(dev), cond], dim=1)
            if self.y.shape[1] + z != cfg.in_dim:
                raise CheckpointError(f"i2v conditioning has {self.y.shape[1]} channels + {z} noise channels, "
                                      f"the DiT expects {cfg.in_dim}")
        if self.mode == "ti2v" and run.task == "i2v":
            self.first = vae_mod.encode(run.vae, run.cond_pixels[:, :1].unsqueeze(0).to(dev))  # [1, z, 1, h, w]
            keep = torch.ones(lat)
            keep[:, :, 0] = 0
            self.keep = keep.to(dev)  # 1 where the sample is denoised, 0 on the image frame
        if run.camera_embedding is not None:
            self.cam = run.camera_embedding.to(dev)
        self.boundary = getattr(model, "boundary_timestep", None)

    # -- the loop ---------------------------------------------------------------------------
    def init_latents(self, noise: torch.Tensor) -> torch.Tensor:
        return self._impose(noise)

    def _impose(self, x):
        if self.keep is None:
            return x
        return (1 - self.keep) * self.first + self.keep * x

    def guidance_at(self, t: float) -> float:
        if self.boundary is not None and t >= self.boundary and self.run.guidance_high is not None:
            return self.run.guidance_high
        return self.run.guidance

    def expert_at(self, t: float) -> str | None:
        if self.boundary is None:
            return None
        return "high_noise" if t >= self.boundary else "low_noise"

    def _timestep(self, t: float, batch: int) -> torch.Tensor:
        if self.keep is None:
            return torch.full((batch,), t, dtype=torch.float32)
        ph, pw = PATCH[1:]
        tok = (self.keep[0, 0][:, ::ph, ::pw] * t).flatten().float().cpu()  # image tokens get t = 0
        return tok.unsqueeze(0).expand(batch, -1)

    def predict(self, x: torch.Tensor, i: int) -> torch.Tensor:
        from phyx.parallel import cfg_gather_combine, cfg_split

        t = float(self.run.sampler.model_timestep(i))
        g = self.guidance_at(t)
        if not self.both:
            return self.model(x, self._timestep(t, 1), self.ctx, **self._extra(1)).float()
        xin = cfg_split(x, x)
        ctx = cfg_split(self.ctx, self.neg)
        b = xin.shape[0]
        out = self.model(xin, self._timestep(t, b), ctx, **self._extra(b)).float()
        return cfg_gather_combine(out, g)

    def _extra(self, b: int) -> dict:
        kw = {}
        if self.y is not None:
            kw["y"] = self.y.expand(b, -1, -1, -1, -1)
        if self.cam is not None:
            kw["cam"] = self.cam.expand(b, -1, -1, -1, -1)
        return kw

    def step(self, pred: torch.Tensor, i: int, x: torch.Tensor) -> torch.Tensor:
        return self._impose(self.run.sampler.step(pred, i, x))

    def final(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def describe(self) -> dict:
        return {"conditioning": self.mode, "cfg_branches": 2 if self.both else 1,
                "expert_boundary_timestep": self.boundary,
                "dit_config": self.cfg.to_dict()}
