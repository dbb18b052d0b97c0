"""Small seeded Cosmos-Predict2 checkpoints written to real safetensors files (tests, demos)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from phyx.io.checkpoint import save_safetensors_atomic, save_sharded, write_text_atomic
from phyx.models.common.init import init_seeded_
from phyx.models.common.meta import on_meta
from phyx.models.cosmos_predict2.config import Predict2Config
from phyx.models.cosmos_predict2.formats import ours_to_official
from phyx.models.cosmos_predict2.model import Predict2DiT


def tiny_config(variant: str = "video2world", **overrides) -> Predict2Config:
    if variant not in ("text2image", "video2world"):
        raise ValueError(f"variant must be 'text2image' or 'video2world', got {variant!r}")
    base = dict(in_channels=5 if variant == "video2world" else 4, out_channels=4, num_attention_heads=2,
                attention_head_dim=16, num_layers=2, mlp_ratio=2.0, text_embed_dim=24, adaln_lora_dim=8,
                max_size=(16, 32, 32), patch_size=(1, 2, 2), rope_scale=(1.0, 2.0, 2.0))
    base.update(overrides)
    return Predict2Config.from_dict(base)


def make_tiny_checkpoint(directory, seed: int = 0, *, variant: str = "video2world", layout: str = "diffusers",
                         sharded: bool = False, **config_overrides) -> Path:
    """Write a tiny seeded Cosmos-Predict2 DiT to `directory` and return it.

    layout 'diffusers': config.json + diffusion_pytorch_model.safetensors (sharded with an index
    when sharded=True); 'official': model.safetensors with `net.` and `net_ema.` MiniTrainDIT keys
    (EMA = weights * 0.5, so the two copies differ) and the config in the file's metadata."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(variant, **config_overrides)
    model = init_seeded_(on_meta(lambda: Predict2DiT(cfg)), seed)
    sd = model.state_dict()
    if layout == "diffusers":
        write_text_atomic(directory / "config.json", json.dumps(cfg.to_diffusers_dict(), indent=1))
        if sharded:
            save_sharded(sd, directory, max_shard_bytes=16 * 1024, prefix="diffusion_pytorch_model")
        else:
            save_safetensors_atomic(sd, directory / "diffusion_pytorch_model.safetensors")
    elif layout == "official":
        off = {"net." + ours_to_official(k): v for k, v in sd.items()}
        off.update({"net_ema." + ours_to_official(k): v * 0.5 for k, v in sd.items()})
        off["net.accum_iteration"] = torch.tensor(7)          # training counters ship in real files
        meta = {"phyx_config": json.dumps({**cfg.to_diffusers_dict(), "qk_norm_eps": cfg.qk_norm_eps})}
        save_safetensors_atomic(off, directory / "model.safetensors", metadata=meta)
    else:
        raise ValueError(f"layout must be 'diffusers' or 'official', got {layout!r}")
    return directory
