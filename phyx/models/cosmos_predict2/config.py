"""Cosmos-Predict2 (MiniTrainDIT) configuration. Field names follow diffusers'
CosmosTransformer3DModel config.json so a diffusers config loads as-is."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from phyx.errors import LayoutError
from phyx.models.common.config import FamilyConfig


@dataclass
class Predict2Config(FamilyConfig):
    in_channels: int = 16            # latent channels (+1 for Video2World's condition-mask channel)
    out_channels: int = 16
    num_attention_heads: int = 16
    attention_head_dim: int = 128
    num_layers: int = 28
    mlp_ratio: float = 4.0
    text_embed_dim: int = 1024       # T5-XXL width (cross-attention K/V input)
    adaln_lora_dim: int = 256
    max_size: tuple[int, int, int] = (128, 240, 240)
    patch_size: tuple[int, int, int] = (1, 2, 2)
    rope_scale: tuple[float, float, float] = (1.0, 4.0, 4.0)   # NTK extrapolation ratios (t, h, w)
    concat_padding_mask: bool = True
    extra_pos_embed_type: str | None = None
    use_crossattn_projection: bool = False
    crossattn_proj_in_channels: int = 1024
    encoder_hidden_states_channels: int = 1024
    # Not in diffusers' config: diffusers' Attention uses eps 1e-5 for the per-head QK RMSNorm,
    # NVIDIA's MiniTrainDIT 1e-6. Each loader sets the value of the implementation it mirrors.
    qk_norm_eps: float = 1e-5
    base_fps: float = 24.0
    extra: dict = field(default_factory=dict)   # unknown diffusers keys, kept for round trips

    @property
    def hidden_size(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def video2world(self) -> bool:
        """Video2World checkpoints carry one extra input channel: the condition mask."""
        return self.in_channels == self.out_channels + 1

    @property
    def patch_in_channels(self) -> int:
        return self.in_channels + int(self.concat_padding_mask)

    ZERO_OK = ("adaln_lora_dim",)   # whole-number fields that may be 0 (FamilyConfig.from_dict)

    def approx_params(self) -> int:
        """Parameter count, to within a few percent (checked before building from a file)."""
        h, lora = self.hidden_size, self.adaln_lora_dim
        patch = self.patch_size[0] * self.patch_size[1] * self.patch_size[2]
        block = (6 * h * h + 2 * self.text_embed_dim * h + int(2 * self.mlp_ratio * h * h)
                 + 3 * (h * lora + lora * 3 * h) + 9 * h)
        emb = (self.patch_in_channels + self.out_channels) * patch * h + 8 * h * h
        if self.use_crossattn_projection:
            emb += self.crossattn_proj_in_channels * self.encoder_hidden_states_channels
        return self.num_layers * block + emb

    def validate(self) -> "Predict2Config":
        if self.attention_head_dim % 2:
            raise LayoutError(f"attention_head_dim must be even, got {self.attention_head_dim}")
        if self.extra_pos_embed_type not in (None, "none"):
            raise LayoutError(f"extra_pos_embed_type={self.extra_pos_embed_type!r} (Cosmos 1.0's learnable "
                             f"position embedding) is not supported; Cosmos-Predict2 uses None")
        if self.patch_size[0] != 1:
            raise LayoutError(f"temporal patch size must be 1 (per-frame AdaLN), got {self.patch_size}")
        return self

    def to_diffusers_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("qk_norm_eps", "base_fps", "extra"):
            d.pop(k)
        d.update({"_class_name": "CosmosTransformer3DModel"})
        return d



def _preset(heads: int, layers: int, v2w: bool, rope_scale) -> Predict2Config:
    return Predict2Config(in_channels=17 if v2w else 16, num_attention_heads=heads, num_layers=layers,
                          rope_scale=rope_scale)


# The released checkpoints (values from diffusers' convert_cosmos_to_diffusers.py).
PRESETS = {
    "2B-Text2Image": _preset(16, 28, False, (1.0, 4.0, 4.0)),
    "14B-Text2Image": _preset(40, 36, False, (1.0, 4.0, 4.0)),
    "2B-Video2World": _preset(16, 28, True, (1.0, 3.0, 3.0)),
    "14B-Video2World": _preset(40, 36, True, (20 / 24, 2.0, 2.0)),
}
