"""Wan2.2 A14B: two experts switched at a timestep boundary. The high-noise expert runs for
t >= boundary * num_train_timesteps (upstream: `t.item() >= boundary`), the low-noise one below.
Boundaries: t2v 0.875, i2v 0.900, LingBot-World 0.947 (config.BOUNDARIES)."""
from __future__ import annotations

import torch
from torch import nn

from phyx.errors import LayoutError


class WanMoE(nn.Module):
    def __init__(self, high_noise: nn.Module, low_noise: nn.Module, boundary: float,
                 num_train_timesteps: int = 1000):
        super().__init__()
        if not 0.0 < boundary < 1.0:
            raise ValueError(f"expert boundary is a fraction of num_train_timesteps in (0, 1), got {boundary}")
        self.high_noise_model = high_noise
        self.low_noise_model = low_noise
        self.boundary = boundary
        self.num_train_timesteps = num_train_timesteps
        self.cfg = high_noise.cfg

    @property
    def boundary_timestep(self) -> float:
        return self.boundary * self.num_train_timesteps

    def expert_for(self, t) -> nn.Module:
        """The expert for timestep t (a number or a tensor whose entries all agree)."""
        t = torch.as_tensor(t).detach().to("cpu", torch.float64).flatten()
        if t.numel() == 0 or bool((t != t[0]).any()):
            raise LayoutError("the A14B expert switch needs one timestep for the whole batch; got "
                              f"{t.numel()} differing values")
        return self.high_noise_model if float(t[0]) >= self.boundary_timestep else self.low_noise_model

    def forward(self, x, t, context, **kw):
        return self.expert_for(t)(x, t, context, **kw)
