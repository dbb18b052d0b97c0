"""Cosmos3 omni (mixture-of-transformers on a Qwen3-VL text backbone) configuration. Field
names follow diffusers' Cosmos3OmniTransformer config.json."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from phyx.errors import LayoutError
from phyx.models.common.config import FamilyConfig


@dataclass
class Cosmos3Config(FamilyConfig):
    attention_bias: bool = False
    head_dim: int = 128
    hidden_size: int = 4096
    intermediate_size: int = 12288
    base_fps: int = 24
    enable_fps_modulation: bool = True
    latent_channel: int = 48
    unified_3d_mrope_reset_spatial_ids: bool = True
    unified_3d_mrope_temporal_modality_margin: int = 15000
    latent_patch_size: int = 2
    num_attention_heads: int = 32
    num_hidden_layers: int = 36
    num_key_value_heads: int = 8
    patch_latent_dim: int = 192
    rms_norm_eps: float = 1e-6
    rope_scaling: dict | None = None
    rope_theta: float = 5_000_000.0
    action_dim: int | None = None
    action_gen: bool = False
    num_embodiment_domains: int = 32
    sound_dim: int | None = None
    sound_gen: bool = False
    sound_latent_fps: float = 25.0
    timestep_scale: float = 0.001
    vocab_size: int = 151936
    hidden_act: str = "silu"
    qk_norm_for_text: bool = True
    use_und_k_norm_for_gen: bool = False
    rope_axes_dim: tuple[int, int, int] | None = None
    vae_temporal_compression: int = 4     # pipeline-side (Wan2.2 VAE); not in diffusers' config
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.rope_axes_dim is None:
            sec = (self.rope_scaling or {}).get("mrope_section", [24, 20, 20])
            self.rope_axes_dim = tuple(sec)
        self.rope_axes_dim = tuple(self.rope_axes_dim)
        super().__post_init__()

    ZERO_OK = ("unified_3d_mrope_temporal_modality_margin",)   # may be 0 (FamilyConfig.from_dict)

    @classmethod
    def check_dict(cls, d: dict, what: str, error) -> None:
        """The mRoPE sections may come from rope_scaling (diffusers) as well as rope_axes_dim."""
        from phyx.io import untrusted as U

        axes = d.get("rope_axes_dim")
        if axes is None and isinstance(d.get("rope_scaling"), dict):
            axes = d["rope_scaling"].get("mrope_section")
        if axes is not None:
            U.check_value("rope_axes_dim / rope_scaling.mrope_section", axes, "tuple[int, int, int]",
                          what, error)

    def approx_params(self) -> int:
        """Parameter count, to within a few percent (checked before building from a file):
        understanding and generation experts per layer, embeddings and LM head."""
        H, hd = self.hidden_size, self.head_dim
        attn = H * self.num_attention_heads * hd * 2 + 2 * H * self.num_key_value_heads * hd
        layer = 2 * (attn + 3 * H * self.intermediate_size + 4 * H)
        emb = 2 * self.vocab_size * H + 4 * self.patch_latent_dim * H + 8 * H * H
        emb += (self.sound_dim or 0) * H * 4 + (self.action_dim or 0) * H * 4
        return self.num_hidden_layers * layer + emb

    def validate(self) -> "Cosmos3Config":
        if self.hidden_act not in ("silu", "relu2"):
            raise LayoutError(f"Cosmos3 hidden_act must be 'silu' or 'relu2', got {self.hidden_act!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise LayoutError(f"{self.num_attention_heads} query heads are not a multiple of "
                             f"{self.num_key_value_heads} KV heads")
        if sum(self.rope_axes_dim) * 2 != self.head_dim:
            raise LayoutError(f"mRoPE sections {self.rope_axes_dim} must add up to head_dim/2 = {self.head_dim // 2}")
        if self.patch_latent_dim != self.latent_channel * self.latent_patch_size ** 2:
            raise LayoutError(f"patch_latent_dim {self.patch_latent_dim} != latent_channel x patch^2 = "
                             f"{self.latent_channel * self.latent_patch_size ** 2}")
        if self.sound_gen and not self.sound_dim:
            raise LayoutError("sound_gen needs sound_dim")
        if self.action_gen and not self.action_dim:
            raise LayoutError("action_gen needs action_dim")
        return self

    def to_diffusers_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("extra")
        d.pop("vae_temporal_compression")
        d["rope_axes_dim"] = list(self.rope_axes_dim)
        d["_class_name"] = "Cosmos3OmniTransformer"
        return d


# Cosmos3 Nano: Qwen3-VL-8B-sized text backbone, 32 query / 8 KV heads of 128, 48-channel
# Wan2.2 latents in 2x2 patches, 64-wide sound latents at 25 Hz.
NANO = Cosmos3Config(head_dim=128, hidden_size=4096, intermediate_size=12288, num_attention_heads=32,
                     num_key_value_heads=8, num_hidden_layers=36, latent_channel=48, latent_patch_size=2,
                     patch_latent_dim=192, sound_gen=True, sound_dim=64, sound_latent_fps=25.0)
