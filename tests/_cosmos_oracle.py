"""Shared helpers for the Cosmos parity tests: diffusers as the oracle, torchvision worked
around (diffusers' CosmosTransformer3DModel resizes the padding mask with torchvision, which
cannot import here; the benchmark's peer needs the same equivalent nearest resize, so both use
phyx.bench.models.patch_diffusers_cosmos_torchvision)."""
from __future__ import annotations

import torch

from phyx.bench.models import patch_diffusers_cosmos_torchvision  # noqa: F401 - re-exported


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()
