"""Small modules shared by the model families."""
from __future__ import annotations

import torch
from torch import nn

from phyx import ops


class RMSWeight(nn.Module):
    """Holds an RMSNorm gain (key `weight`); the norm itself is phyx.ops.rms_norm."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return ops.rms_norm(x, self.weight, self.eps)
