"""The few collectives the pipelines need, on top of phyx.comm (vendor-free).

Single process (phyx.comm absent or not initialised) is world size 1 and every helper is a no-op.
"""
from __future__ import annotations

import torch


def _comm():
    try:
        import phyx.comm as comm
    except ModuleNotFoundError:
        return None
    return comm if comm.is_initialized() else None


def world_size() -> int:
    c = _comm()
    return c.world_size() if c else 1


def rank() -> int:
    c = _comm()
    return c.rank() if c else 0


def barrier() -> None:
    c = _comm()
    if c:
        c.barrier()


def all_gather_stack(x: torch.Tensor) -> torch.Tensor:
    """[world, *x.shape]: every rank's x (same shape on every rank)."""
    c = _comm()
    if not c:
        return x.unsqueeze(0)
    return c.all_gather(x.contiguous().unsqueeze(0), dim=0)


def all_gather_uneven(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, list[int]]:
    """Concatenate every rank's x along `dim`, where sizes along `dim` may differ per rank
    (odd sizes split unevenly). Pads to the largest, gathers once, strips the padding.
    Returns (full, per-rank sizes)."""
    c = _comm()
    if not c:
        return x, [x.shape[dim]]
    dim = dim % x.dim()
    sizes = all_gather_stack(torch.tensor([x.shape[dim]], dtype=torch.int64, device=x.device))
    sizes = [int(s) for s in sizes.flatten().tolist()]
    most = max(sizes)
    if x.shape[dim] < most:
        pad_shape = list(x.shape)
        pad_shape[dim] = most - x.shape[dim]
        x = torch.cat([x, x.new_zeros(pad_shape)], dim=dim)
    stacked = all_gather_stack(x)
    return torch.cat([stacked[r].narrow(dim, 0, n) for r, n in enumerate(sizes)], dim=dim), sizes


def all_ok(flag: bool) -> bool:
    """True only if every rank says True (used to fail all ranks together, never hang one)."""
    c = _comm()
    if not c:
        return flag
    t = torch.tensor([0 if flag else 1], dtype=torch.int64)
    out = c.all_reduce(t, op="sum")
    t = out if out is not None else t
    return int(t.item()) == 0
