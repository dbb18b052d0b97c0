"""Shared by the port drivers: re-draw weights, seeded CPU inputs."""
from __future__ import annotations

import torch


def redraw(model: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Re-draw every floating parameter at random (seeded, on the CPU). Upstream zero-inits
    output projections and modulation (adaLN-zero): left at zero they hide whole branches from
    any comparison. Norm gains are drawn around 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.is_floating_point():
                continue
            r = torch.randn(p.shape, generator=g, dtype=torch.float32) * std
            is_gain = p.dim() == 1 and ("norm" in name or name.endswith((".weight", ".scale"))) and \
                bool((p == 1).all())
            p.copy_((1 + r if is_gain else r).to(p.dtype))
    return model


def randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale
