"""diffusers' Cosmos transformer without torchvision (the oracle and benchmark peer)."""
from __future__ import annotations

import torch


def patch_diffusers_cosmos_torchvision() -> None:
    """diffusers' Cosmos transformer resizes its padding mask with torchvision, imported only when
    torchvision is installed (the CPU dev machine has none). Its call is a nearest-neighbour
    resize, which F.interpolate computes the same way; supplied only where torchvision is absent."""
    import types

    import diffusers.models.transformers.transformer_cosmos as tc

    if hasattr(tc, "transforms"):
        return

    def resize(img, size, interpolation=None):
        return torch.nn.functional.interpolate(img, size=list(size), mode="nearest")

    tc.transforms = types.SimpleNamespace(functional=types.SimpleNamespace(resize=resize),
                                          InterpolationMode=types.SimpleNamespace(NEAREST="nearest"))
