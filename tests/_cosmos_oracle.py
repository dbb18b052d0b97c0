"""Shared helpers for the Cosmos parity tests: diffusers as the oracle, torchvision worked
around (diffusers' CosmosTransformer3DModel resizes the padding mask with torchvision, which
cannot import here; we give its module an equivalent nearest resize -- in the test only)."""
from __future__ import annotations

import types

import torch
import torch.nn.functional as F


def patch_diffusers_cosmos_torchvision() -> None:
    import diffusers.models.transformers.transformer_cosmos as tc

    if hasattr(tc, "transforms"):
        return

    def resize(img, size, interpolation=None):
        # torchvision's tensor resize with InterpolationMode.NEAREST is F.interpolate(mode="nearest")
        return F.interpolate(img, size=list(size), mode="nearest")

    tc.transforms = types.SimpleNamespace(
        functional=types.SimpleNamespace(resize=resize),
        InterpolationMode=types.SimpleNamespace(NEAREST="nearest"))


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()
