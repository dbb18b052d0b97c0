"""Small seeded Cosmos3 checkpoints written to real safetensors files (tests, demos)."""
from __future__ import annotations

import json
from pathlib import Path

from phyx.io.checkpoint import save_safetensors_atomic, save_sharded, write_text_atomic
from phyx.models.common.init import init_seeded_
from phyx.models.common.meta import on_meta
from phyx.models.cosmos3.config import Cosmos3Config
from phyx.models.cosmos3.model import Cosmos3Omni


def tiny_config(**overrides) -> Cosmos3Config:
    # 16 query over 8 KV heads (GQA groups of 2, as Nano has groups of 4), so
    # tp in {1, 2, 4, 8} divides the KV heads exactly as for Nano.
    base = dict(head_dim=8, hidden_size=32, intermediate_size=48, num_attention_heads=16,
                num_key_value_heads=8, num_hidden_layers=2, latent_channel=4, latent_patch_size=2,
                patch_latent_dim=16, vocab_size=64, rope_axes_dim=[2, 1, 1],
                unified_3d_mrope_temporal_modality_margin=20, sound_gen=True, sound_dim=6,
                action_gen=True, action_dim=5, num_embodiment_domains=3)
    base.update(overrides)
    return Cosmos3Config.from_dict(base)


def make_tiny_checkpoint(directory, seed: int = 0, *, sharded: bool = False, **overrides) -> Path:
    """Write a tiny seeded Cosmos3OmniTransformer (diffusers layout) to `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(**overrides)
    model = init_seeded_(on_meta(lambda: Cosmos3Omni(cfg)), seed)
    sd = model.state_dict()
    write_text_atomic(directory / "config.json", json.dumps(cfg.to_diffusers_dict(), indent=1))
    if sharded:
        save_sharded(sd, directory, max_shard_bytes=32 * 1024, prefix="diffusion_pytorch_model")
    else:
        save_safetensors_atomic(sd, directory / "diffusion_pytorch_model.safetensors")
    return directory
