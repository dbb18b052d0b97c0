"""Video VAEs through diffusers' AutoencoderKLWan (the Wan2.1 VAE, also used by
Cosmos-Predict2, and the Wan2.2 VAE with patch size 2): build tiny seeded ones, load from a
checkpoint directory (diffusers layout: vae/config.json + safetensors), (de)normalise latents.
"""
from __future__ import annotations

from pathlib import Path

import torch

from phyx.errors import CheckpointError

# Tiny configs: the real channel layout is kept (Wan2.1: 8x spatial, z 16; Wan2.2: patch 2,
# 16x spatial, residual blocks) with a few channels, so strides and code paths are the real ones.
TINY_VAE = {
    "wan2.1": dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                   temperal_downsample=[False, True, True]),
    "wan2.2": dict(base_dim=8, decoder_base_dim=8, z_dim=48, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                   temperal_downsample=[False, True, True], is_residual=True, patch_size=2,
                   in_channels=12, out_channels=12, scale_factor_spatial=16),
}


def build_tiny_vae(kind: str, seed: int = 0, z_dim: int | None = None):
    from diffusers import AutoencoderKLWan

    cfg = dict(TINY_VAE[kind])
    if z_dim is not None:
        cfg["z_dim"] = z_dim
    g = torch.Generator().manual_seed(seed)
    # latent statistics are part of the config; seeded, so normalisation is exercised
    cfg["latents_mean"] = (torch.randn(cfg["z_dim"], generator=g) * 0.1).tolist()
    cfg["latents_std"] = (1.0 + torch.rand(cfg["z_dim"], generator=g)).tolist()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(**cfg)
    return vae.eval()


def load_vae(directory: str | Path, dtype=torch.float32, device=None):
    from diffusers import AutoencoderKLWan

    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise CheckpointError(f"VAE directory {directory} has no config.json (expected the diffusers "
                              f"layout: vae/config.json + diffusion_pytorch_model.safetensors). A "
                              f"Wan .pth VAE must first be converted with `phyx convert`.")
    if not list(directory.glob("*.safetensors")):
        raise CheckpointError(f"VAE directory {directory} has no .safetensors weights")
    vae = AutoencoderKLWan.from_pretrained(str(directory), torch_dtype=dtype, use_safetensors=True)
    return vae.to(device).eval() if device is not None else vae.eval()


def strides(vae) -> tuple[int, int]:
    """(temporal, spatial) compression of the VAE."""
    c = vae.config
    t = 2 ** sum(bool(x) for x in c.temperal_downsample)
    return t, int(c.scale_factor_spatial or 8)


def _stats(vae, like: torch.Tensor):
    c = vae.config
    mean = torch.tensor(c.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1).to(like.device)
    std = torch.tensor(c.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1).to(like.device)
    return mean, std


def normalize(vae, z: torch.Tensor) -> torch.Tensor:
    """VAE latent -> the DiT's latent space ((z - mean) / std, as Wan and Cosmos do)."""
    mean, std = _stats(vae, z)
    return ((z.float() - mean) / std).to(z.dtype)


def denormalize(vae, x: torch.Tensor) -> torch.Tensor:
    mean, std = _stats(vae, x)
    return (x.float() * std + mean).to(x.dtype)


def encode(vae, video: torch.Tensor) -> torch.Tensor:
    """Pixels [B, 3, F, H, W] in [-1, 1] -> normalised latent (posterior mode)."""
    with torch.no_grad():
        z = vae.encode(video.to(next(vae.parameters()).dtype)).latent_dist.mode()
    return normalize(vae, z.float())
