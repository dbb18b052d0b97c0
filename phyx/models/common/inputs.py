"""Host-side draws shared by the families' parity / oracle cases: the same seed gives different
torch.randn on different vendors, so every input is drawn on the CPU from a seeded generator."""
from __future__ import annotations

import torch

DATASET = 4        # loss parity: the fixed training set's size; each step draws a batch from it


def gen(seed: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + salt)


def batch_order(seed: int, step: int, batch: int, dataset: int = DATASET):
    """A generator for this training step's draws and the data order (indices into the fixed set)."""
    g = gen(seed, 10_000 + step)
    return g, torch.randperm(dataset, generator=g)[:batch]


def to(device, t):
    """t on `device` (tensors only; None leaves it where it is)."""
    return t.to(device) if isinstance(t, torch.Tensor) and device is not None else t
