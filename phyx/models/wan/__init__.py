"""Wan2.1 / Wan2.2 DiT and LingBot-World on phyx.ops (see docs/architecture.md, 'Wan2.x and
LingBot-World')."""
from phyx.models import register_family
from phyx.models.wan.config import BOUNDARIES, CONFIGS, WanConfig, get_config
from phyx.models.wan.keys import diffusers_to_official, official_to_diffusers
from phyx.models.wan.loading import checkpoint_format, detect, load_wan, make_tiny_checkpoint, save_wan, seeded_model
from phyx.models.wan.model import WanModel, sinusoidal_embedding
from phyx.models.wan.moe import WanMoE

__all__ = ["WanConfig", "CONFIGS", "BOUNDARIES", "get_config", "WanModel", "WanMoE", "load_wan",
           "save_wan", "make_tiny_checkpoint", "seeded_model", "checkpoint_format",
           "diffusers_to_official", "official_to_diffusers", "sinusoidal_embedding"]

register_family("wan", detect, load_wan)
