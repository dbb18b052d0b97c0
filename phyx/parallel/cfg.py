"""CFG parallel: the conditional and unconditional branches run on two rank groups (cfg rank 0:
cond, 1: uncond); one all-gather of the prediction per step, combined locally on every rank.
With cfg_size == 1 the same helpers batch both branches on one rank, so one pipeline serves both.

Noise must be identical on every rank: draw it on the host from a seeded generator
(shared_noise), never from the device RNG (which differs across vendors and is per device).
"""
from __future__ import annotations

import warnings

import torch

from phyx import comm
from phyx.parallel.state import ParallelState, get_parallel_state


def _st(state):
    return state if state is not None else get_parallel_state()


def check_guidance(guidance_scale: float, *, state: ParallelState | None = None) -> bool:
    """Warn when cfg=2 but the guidance scale makes the uncond branch useless (<= 1)."""
    st = _st(state)
    if st.cfg_size == 2 and guidance_scale <= 1.0:
        warnings.warn(f"cfg=2 with guidance_scale={guidance_scale} <= 1: the unconditional branch "
                      f"is wasted work (guidance is off); run with cfg=1 and give those ranks to sp/tp",
                      stacklevel=3)
        return False
    return True


def cfg_split(cond, uncond, *, dim: int = 0, state: ParallelState | None = None):
    """This rank's branch input: cond on cfg rank 0, uncond on cfg rank 1; with cfg_size 1 both,
    concatenated along `dim` ([cond; uncond])."""
    st = _st(state)
    if st.cfg_size == 1:
        return torch.cat([cond, uncond], dim=dim)
    return cond if st.cfg_rank == 0 else uncond


def cfg_gather_combine(pred_local, guidance_scale: float, *, dim: int = 0,
                       state: ParallelState | None = None):
    """uncond + g * (cond - uncond), identical on every rank. pred_local: this rank's branch
    prediction (cfg_size 2) or [cond; uncond] along `dim` (cfg_size 1)."""
    st = _st(state)
    check_guidance(guidance_scale, state=st)
    both = pred_local if st.cfg_size == 1 else comm.all_gather(pred_local, dim=dim, group=st.cfg_group)
    cond, uncond = both.chunk(2, dim=dim)
    return uncond + guidance_scale * (cond - uncond)


def shared_noise(shape, seed: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """Gaussian noise that is the same on every rank and every vendor: drawn on the host from a
    seeded CPU generator, then moved to the device."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=g, dtype=torch.float32).to(dtype=dtype, device=device)
