"""Initial noise drawn on the CPU from the seed, then moved to the device: the same seed gives
the same noise on every vendor and every rank (device RNGs differ between vendors)."""
from __future__ import annotations

import torch


def cpu_noise(shape, seed: int, device=None, dtype=torch.float32, offset: int = 0) -> torch.Tensor:
    """Standard normal noise of `shape` from torch.Generator('cpu').manual_seed(seed + offset)."""
    g = torch.Generator(device="cpu").manual_seed(int(seed) + int(offset))
    x = torch.randn(tuple(shape), generator=g, dtype=torch.float32)
    return x.to(device=device, dtype=dtype) if device is not None else x.to(dtype)
