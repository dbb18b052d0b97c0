"""Classifier-free guidance for Cosmos3: velocity = uncond + g * (cond - uncond) per modality.

The two branches have different prompts (hence different text lengths and sequences); each
branch's understanding-tower K/V are computed once (`BranchCaches`) and reused every step.
Under CFG parallel (cfg = 2) cfg rank 0 runs the conditional branch and rank 1 the
unconditional one, and one all-gather per modality combines them; with cfg = 1 both run here."""
from __future__ import annotations

import torch

from phyx.parallel import cfg_gather_combine, get_parallel_state


class BranchCaches:
    """Lazily built TextCache per branch ('cond' / 'uncond') that this rank runs."""

    def __init__(self):
        self._c = {}

    def get(self, model, branch: str, input_ids, positions):
        if branch not in self._c:
            self._c[branch] = model.encode_text(input_ids, positions)
        return self._c[branch]


def _branches():
    st = get_parallel_state()
    if st.cfg_size == 1:
        return ["cond", "uncond"], st
    return ["cond" if st.cfg_rank == 0 else "uncond"], st


def guided_step(model, media: dict, cond_ids, uncond_ids, guidance: float, *, caches: BranchCaches,
                fps: float | None = 24.0) -> dict:
    """One guided denoising step. media: forward()'s media keyword arguments (vision,
    vision_timesteps, sound, ...). Returns the guided velocities {'vision', 'sound', 'action'}."""
    names, st = _branches()
    preds = {}
    for b in names:
        ids = cond_ids if b == "cond" else uncond_ids
        cache = caches.get(model, b, ids, None)
        preds[b] = model(ids, text_cache=cache, fps=fps, **media)
    out = {}
    for key in ("vision", "sound", "action"):
        if preds[names[0]][key] is None:
            out[key] = None
            continue
        local = (torch.stack([preds["cond"][key], preds["uncond"][key]]) if st.cfg_size == 1
                 else preds[names[0]][key][None])
        out[key] = cfg_gather_combine(local, guidance, dim=0)[0]
    return out
