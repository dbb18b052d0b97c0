"""Cosmos-Predict2 (Text2Image, Video2World) in the pipeline: the rectified-flow sampler of
phyx.pipelines.schedulers (Karras sigmas, EDM scale: the start is noise * sigma_max) around
phyx.models.cosmos_predict2.guided_x0, which applies the rectified-flow preconditioning, the
Video2World conditioning (clean first latent frames + condition-mask channel) and CFG (cfg=2
splits the branches over ranks). Guidance is Cosmos's: x0 = cond + g (cond - uncond)."""
from __future__ import annotations

from pathlib import Path

import torch

from phyx.errors import CheckpointError
from phyx.pipelines import protocol
from phyx.pipelines import vae as vae_mod

PATCH = (1, 2, 2)
SIGMA_DATA = 1.0


def required_parts(ckpt: Path, spec) -> list[tuple[Path, str]]:
    return [(ckpt / "transformer", "the DiT (diffusers CosmosTransformer3DModel dir or a converted "
                                   "official checkpoint)"),
            (ckpt / "vae", "the Wan2.1 VAE (diffusers AutoencoderKLWan)"),
            (ckpt / "text_encoder", "the T5 text encoder (transformers, safetensors)"),
            (ckpt / "tokenizer", "the tokenizer files")]


def load_dit(ckpt: Path, spec, dtype, device):
    from phyx.models.cosmos_predict2 import load

    return load(ckpt / "transformer", dtype=dtype, device=device)


class Denoiser(protocol.Denoiser):
    def __init__(self, run, model):
        self.run, self.model = run, model
        cfg = model.config
        if run.vae.config.z_dim != cfg.out_channels:
            raise CheckpointError(f"the VAE has {run.vae.config.z_dim} latent channels but the DiT expects "
                                  f"{cfg.out_channels}; the checkpoint parts do not belong together")
        if run.task == "v2w" and not cfg.video2world:
            raise CheckpointError(f"{run.checkpoint} holds a Text2Image DiT; v2w needs a Video2World checkpoint")
        if run.task == "t2i" and cfg.video2world:
            raise CheckpointError(f"{run.checkpoint} holds a Video2World DiT; use --task v2w with --image")
        if run.sampler.kind != "cosmos-rf":
            raise CheckpointError("Cosmos-Predict2 runs with the cosmos-rf sampler")
        dev = run.device
        self.text, self.neg = run.text.to(dev), run.neg_text.to(dev)
        self.cond = None
        self.n_cond = 0
        if run.task == "v2w":
            px = run.cond_pixels  # [3, Fc, H, W] conditioning frames, padded with the last one
            fc = min(px.shape[1], run.frames)
            fc = (fc - 1) // 4 * 4 + 1  # whole latent frames only
            pad = px[:, fc - 1:fc].expand(-1, run.frames - fc, -1, -1)
            video = torch.cat([px[:, :fc], pad], dim=1).unsqueeze(0).to(dev)
            self.cond = vae_mod.encode(run.vae, video) * SIGMA_DATA
            self.n_cond = (fc - 1) // 4 + 1
        self.fps = run.fps if run.task == "v2w" else None

    def init_latents(self, noise: torch.Tensor) -> torch.Tensor:
        return noise * self.run.sampler.sigma_max

    def predict(self, x: torch.Tensor, i: int) -> torch.Tensor:
        from phyx.models.cosmos_predict2 import guided_x0

        sigma = torch.tensor(self.run.sampler.sigma(i), dtype=torch.float64)
        kw = {"fps": self.fps}
        if self.cond is not None:
            kw.update(cond_latents=self.cond, num_conditional_frames=self.n_cond)
        return guided_x0(self.model, x, sigma, self.text, self.neg, self.run.guidance, **kw).float()

    def step(self, x0: torch.Tensor, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.run.sampler.step_x0(x0, i, x)

    def final(self, x: torch.Tensor) -> torch.Tensor:
        if self.cond is not None:  # the conditioning frames are the input, exactly
            x = x.clone()
            x[:, :, :self.n_cond] = self.cond[:, :, :self.n_cond]
        return x / SIGMA_DATA

    def describe(self) -> dict:
        return {"conditioning": "video2world" if self.cond is not None else "text2image",
                "conditional_latent_frames": self.n_cond, "guidance_form": "cond + g * (cond - uncond)",
                "dit_config": self.model.config.to_diffusers_dict()}
