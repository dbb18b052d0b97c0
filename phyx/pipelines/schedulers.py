"""Samplers. Flow-matching UniPC (with shift) and flow Euler come from diffusers; the Cosmos
rectified-flow sampler (EDM Karras sigmas with the rectified-flow preconditioning that
Cosmos-Predict2 uses) is written here. Every schedule is computed on the host (diffusers builds
it in numpy float64; ours in torch float64), so the A14B expert switch and each sigma fall on
the same step on every vendor.

All samplers expose the same small interface:
    s = make_sampler(kind, steps, shift)
    s.timesteps            # model timesteps, host float32/64 tensor, one per step
    s.step(pred, i, x)     # x_{i+1} from the model's prediction at step i (fp32)
"""
from __future__ import annotations

import math

import torch

SAMPLERS = ("unipc", "euler", "cosmos-rf")


class DiffusersFlowSampler:
    """UniPCMultistepScheduler(flow_prediction, use_flow_sigmas, flow_shift) or
    FlowMatchEulerDiscreteScheduler(shift): the model predicts the flow velocity."""

    def __init__(self, kind: str, steps: int, shift: float, num_train_timesteps: int = 1000):
        from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

        if kind == "unipc":
            self.sched = UniPCMultistepScheduler(num_train_timesteps=num_train_timesteps,
                                                 prediction_type="flow_prediction", use_flow_sigmas=True,
                                                 flow_shift=shift)
        else:
            self.sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps,
                                                         shift=shift)
        self.sched.set_timesteps(steps, device="cpu")
        self.timesteps = self.sched.timesteps.clone()
        self.sigmas = self.sched.sigmas.double().clone()
        self.kind = kind

    def model_timestep(self, i: int) -> torch.Tensor:
        return self.timesteps[i]

    def step(self, pred: torch.Tensor, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.sched.step(pred.float(), self.timesteps[i], x.float(), return_dict=False)[0]

    def describe(self) -> dict:
        return {"sampler": self.kind, "class": type(self.sched).__name__, "config": dict(self.sched.config)}


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


class CosmosRectifiedFlowSampler:
    """Cosmos-Predict2's sampler, as its diffusers pipelines run it: Karras sigmas from 80 to
    0.002 (rho 7; the last step lands on sigma_min, not 0), the network sees
    x * (1 - t) at t = sigma / (sigma + 1) and predicts a rectified-flow velocity v; the denoised
    estimate is x0 = (1 - t) x - t v and each step is Euler in sigma:
    x <- x + (sigma_next - sigma) (x - x0) / sigma."""

    def __init__(self, steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, sigma_data: float = 1.0):
        s = karras_sigmas(steps, sigma_min, sigma_max)
        self.sigmas = torch.cat([s, s[-1:]])  # final_sigmas_type = sigma_min
        self.sigma_max, self.sigma_min, self.sigma_data = sigma_max, sigma_min, sigma_data
        self.t = self.sigmas / (self.sigmas + 1)
        self.timesteps = self.t[:-1].clone()
        self.kind = "cosmos-rf"

    @property
    def init_noise_sigma(self) -> float:
        return self.sigma_max

    def model_input_scale(self, i: int) -> float:
        return float(1 - self.t[i])

    def model_timestep(self, i: int) -> torch.Tensor:
        return self.t[i]

    def sigma(self, i: int) -> float:
        return float(self.sigmas[i])

    def step_x0(self, x0: torch.Tensor, i: int, x: torch.Tensor) -> torch.Tensor:
        """Euler step from the denoised estimate x0."""
        sigma, nxt = float(self.sigmas[i]), float(self.sigmas[i + 1])
        x = x.float()
        return x + (nxt - sigma) * (x - x0.float()) / sigma

    def step(self, velocity: torch.Tensor, i: int, x: torch.Tensor) -> torch.Tensor:
        """Euler step from the network's rectified-flow velocity on c_in-scaled input."""
        t = float(self.t[i])
        return self.step_x0((1 - t) * x.float() - t * velocity.float(), i, x)

    def describe(self) -> dict:
        return {"sampler": self.kind, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max,
                "rho": 7.0, "final_sigma": "sigma_min"}


def make_sampler(kind: str, steps: int, shift: float = 1.0):
    if kind not in SAMPLERS:
        raise ValueError(f"unknown sampler {kind!r}; choose one of {SAMPLERS}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if kind == "cosmos-rf":
        return CosmosRectifiedFlowSampler(steps)
    if not (shift > 0 and math.isfinite(shift)):
        raise ValueError(f"flow shift must be a positive number, got {shift}")
    return DiffusersFlowSampler(kind, steps, shift)
