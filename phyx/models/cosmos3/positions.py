"""The joint token sequence of one Cosmos3 sample and its mRoPE position ids, laid out as
diffusers' Cosmos3 pipeline lays it out: [text (understanding) | vision | sound | action]
(generation tokens after the text). Vision, sound and action are temporal siblings: all three
start at the same temporal offset (text length + the modality margin)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from phyx.ops import rope_tables


@dataclass
class SequenceLayout:
    text_len: int
    vision_grid: tuple[int, int, int]           # (t, h, w) in patches
    sound_len: int = 0
    action_len: int = 0

    @property
    def vision_len(self) -> int:
        return math.prod(self.vision_grid)

    @property
    def gen_len(self) -> int:
        return self.vision_len + self.sound_len + self.action_len

    @property
    def total(self) -> int:
        return self.text_len + self.gen_len


def position_ids(cfg, layout: SequenceLayout, fps: float | None = None) -> torch.Tensor:
    """[3, S] float64 ids for the whole sequence (the pipeline's text + vision + sound + action)."""
    mod = cfg.enable_fps_modulation
    text, nxt = rope_tables.cosmos3_text_positions(layout.text_len, 0.0)
    start = nxt + cfg.unified_3d_mrope_temporal_modality_margin
    kw = dict(base_fps=float(cfg.base_fps), reset_spatial=cfg.unified_3d_mrope_reset_spatial_ids)
    parts = [text]
    vis, _ = rope_tables.cosmos3_media_positions(layout.vision_grid, start, fps=fps if mod else None,
                                                 temporal_compression=cfg.vae_temporal_compression, **kw)
    parts.append(vis)
    if layout.sound_len:
        snd, _ = rope_tables.cosmos3_media_positions((layout.sound_len, 1, 1), start,
                                                     fps=cfg.sound_latent_fps if mod else None,
                                                     temporal_compression=1, **kw)
        parts.append(snd)
    if layout.action_len:
        act, _ = rope_tables.cosmos3_media_positions(
            (layout.action_len, 1, 1), start, fps=fps if mod else None, temporal_compression=1,
            base_temporal_compression=cfg.vae_temporal_compression, start_frame=1, **kw)
        parts.append(act)
    return torch.cat(parts, dim=1)
