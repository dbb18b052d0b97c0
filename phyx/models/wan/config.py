"""Wan2.x DiT configurations (numbers from the official Wan2.1 / Wan2.2 / LingBot-World configs)."""
from __future__ import annotations

from dataclasses import dataclass, field

from phyx.errors import LayoutError
from phyx.models.common.config import FamilyConfig

# Which Wan checkpoint family a config describes:
#   t2v   text-to-video (16-channel input)
#   i2v   image-to-video; Wan2.1 adds the CLIP image branch (image_dim=1280), Wan2.2 does not
#   ti2v  Wan2.2 TI2V-5B (48-channel latents, per-token timesteps)
VARIANTS = ("t2v", "i2v", "ti2v")


@dataclass(frozen=True)
class WanConfig(FamilyConfig):
    variant: str = "t2v"
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_len: int = 512
    in_dim: int = 16
    dim: int = 2048
    ffn_dim: int = 8192
    freq_dim: int = 256
    text_dim: int = 4096
    out_dim: int = 16
    num_heads: int = 16
    num_layers: int = 32
    qk_norm: bool = True
    cross_attn_norm: bool = True
    eps: float = 1e-6
    image_dim: int | None = None       # CLIP feature size of the Wan2.1 i2v image branch (1280;
                                       # it attends to all CLIP tokens given, 257 upstream)
    camera_channels: int | None = None  # LingBot-World: 6 ([ray origin, ray direction])
    rope_max_len: int = 1024
    num_train_timesteps: int = 1000
    extra: dict = field(default_factory=dict, compare=False)

    def validate(self):
        if self.num_heads < 1:
            raise LayoutError(f"Wan num_heads must be >= 1, got {self.num_heads}")
        if self.variant not in VARIANTS:
            raise LayoutError(f"Wan variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.dim % self.num_heads:
            raise LayoutError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2:
            raise LayoutError(f"head_dim {self.head_dim} must be even for RoPE")
        return self

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def camera_in_features(self) -> int:
        """Camera patch-embedding input: channels x 8x8 pixels per latent pixel x patch volume."""
        pt, ph, pw = self.patch_size
        return self.camera_channels * 64 * pt * ph * pw

    def approx_params(self) -> int:
        """Parameter count, to within a few percent (checked before building from a file)."""
        d, f, patch = self.dim, self.ffn_dim, self.patch_size[0] * self.patch_size[1] * self.patch_size[2]
        block = 8 * d * d + 2 * d * f + 12 * d + (2 * d * d if self.image_dim else 0)
        emb = (self.in_dim * patch * d + self.text_dim * d + self.freq_dim * d + 8 * d * d
               + patch * self.out_dim * d)
        if self.image_dim:
            emb += self.image_dim * (self.image_dim + d) + d * d
        if self.camera_channels:
            emb += self.camera_in_features * d + d * d
        return self.num_layers * block + emb



_14B = dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)

CONFIGS: dict[str, WanConfig] = {
    "wan2.1-t2v-1.3b": WanConfig("t2v", dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
    "wan2.1-t2v-14b": WanConfig("t2v", **_14B),
    "wan2.1-i2v-14b": WanConfig("i2v", in_dim=36, image_dim=1280, **_14B),
    "wan2.2-ti2v-5b": WanConfig("ti2v", in_dim=48, out_dim=48, dim=3072, ffn_dim=14336, num_heads=24,
                                num_layers=30),
    # A14B: one config per expert; the pair is switched at a timestep boundary (see moe.py).
    "wan2.2-t2v-a14b": WanConfig("t2v", **_14B),
    "wan2.2-i2v-a14b": WanConfig("i2v", in_dim=36, **_14B),
    "lingbot-world": WanConfig("i2v", in_dim=36, camera_channels=6, **_14B),
    # Tiny configs for tests and the default demo: head_dim 16, RoPE split (t, h, w) = (8, 4, 4).
    "tiny-t2v": WanConfig("t2v", dim=64, ffn_dim=128, num_heads=4, num_layers=2, text_dim=32,
                          freq_dim=32, text_len=16, in_dim=4, out_dim=4),
    "tiny-i2v": WanConfig("i2v", dim=64, ffn_dim=128, num_heads=4, num_layers=2, text_dim=32,
                          freq_dim=32, text_len=16, in_dim=12, out_dim=4),
    "tiny-i2v-clip": WanConfig("i2v", dim=64, ffn_dim=128, num_heads=4, num_layers=2, text_dim=32,
                               freq_dim=32, text_len=16, in_dim=12, out_dim=4, image_dim=24),
    "tiny-ti2v": WanConfig("ti2v", dim=64, ffn_dim=128, num_heads=4, num_layers=2, text_dim=32,
                           freq_dim=32, text_len=16, in_dim=6, out_dim=6),
    "tiny-lingbot": WanConfig("i2v", dim=64, ffn_dim=128, num_heads=4, num_layers=2, text_dim=32,
                              freq_dim=32, text_len=16, in_dim=12, out_dim=4, camera_channels=6),
}

# Expert switch points (fraction of num_train_timesteps); the high-noise expert runs at t >= boundary.
BOUNDARIES = {"wan2.2-t2v-a14b": 0.875, "wan2.2-i2v-a14b": 0.900, "lingbot-world": 0.947}


def get_config(name: str) -> WanConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise LayoutError(f"unknown Wan config {name!r}; known: {sorted(CONFIGS)}") from None
