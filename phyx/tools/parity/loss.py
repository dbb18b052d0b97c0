"""Loss parity: a short training run per backend on fixed data, with every random draw (data,
noise, timesteps) made on the CPU from (seed, step), so RNG consumption is aligned whatever the
vendor; per-step loss and gradient-norm curves are compared by the mean relative error over
windows of steps (Ascend's own standard: <= 1 %), and per-parameter gradients for one step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from phyx.device import torch_device
from phyx.errors import InputError
from phyx.tools.parity import metrics as M
from phyx.tools.parity.backends import using_backend

WINDOW_LIMIT = 0.01


def _check_count(name: str, value, flag: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"loss parity: {name} must be a whole number >= 1, got {value!r}; pass "
                         f"{flag} 1 or more (no steps, nothing compared, never a PASS)")


@dataclass
class TrainCurve:
    backend: str
    emulated: bool
    dtype: str
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    first_grads: dict = field(default_factory=dict)   # param name -> CPU tensor (step 0)

    @property
    def label(self) -> str:
        return f"{self.backend} (EMULATED)" if self.emulated else self.backend


def flow_matching_batch(inputs: dict, step: int, seed: int = 0) -> dict:
    """Wan-style rectified flow: x_t = (1 - s) x0 + s noise, target = noise - x0, timestep 1000 s.
    All draws on the CPU from (seed, step); s in float64."""
    g = torch.Generator().manual_seed(seed * 100_003 + step)
    x0 = inputs["x"]
    noise = torch.randn(x0.shape, generator=g)
    s = torch.rand(x0.shape[0], generator=g, dtype=torch.float64)
    sf = s.to(torch.float32)[:, None, None]
    return {**inputs, "x": (1 - sf) * x0 + sf * noise, "t": s * 1000.0, "target": noise - x0}


def mse_loss(model, batch: dict, device, dtype, forward: Callable) -> torch.Tensor:
    target = batch["target"].to(device)
    pred = forward(model, {k: v for k, v in batch.items() if k != "target"}, device, dtype)
    return torch.mean((pred.float() - target.float()) ** 2)


def train(build: Callable, inputs: dict, forward: Callable, backend: str, *, steps: int = 8,
          dtype=torch.float32, lr: float = 1e-3, seed: int = 0, policy: str = "reference",
          make_batch: Callable = flow_matching_batch, loss_fn: Callable = mse_loss,
          prepare: Callable | None = None) -> TrainCurve:
    """AdamW for `steps` steps on `backend`. prepare(model, device, dtype) places the model
    (default .to(device, dtype)); every random draw happens in make_batch on the CPU."""
    _check_count("steps", steps, "--steps")
    with using_backend(backend, policy) as b:
        dev = torch_device()   # this rank's current device, never device 0
        model = build()
        model = (prepare(model, dev, dtype) if prepare is not None
                 else model.to(device=dev, dtype=dtype)).train()
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        curve = TrainCurve(b.name, b.emulated, str(dtype).replace("torch.", ""))
        for step in range(steps):
            batch = make_batch(inputs, step, seed)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch, dev, dtype, forward)
            loss.backward()
            grads = [p.grad.float().norm() ** 2 for p in model.parameters() if p.grad is not None]
            curve.loss.append(float(loss.detach().cpu()))
            curve.grad_norm.append(float(torch.stack(grads).sum().sqrt().cpu()))
            if step == 0:
                curve.first_grads = {n: p.grad.detach().to("cpu", copy=True)
                                     for n, p in model.named_parameters() if p.grad is not None}
            opt.step()
    return curve


def window_errors(a: list[float], b: list[float], window: int = 4) -> list[float]:
    """Mean relative error |b - a| / |a| over consecutive windows of steps."""
    _check_count("window", window, "--window")
    if len(a) != len(b):
        raise InputError(f"curves have different lengths: {len(a)} vs {len(b)}")
    if not a:
        raise InputError("loss parity: the curves hold no steps; nothing to compare")
    out = []
    for s in range(0, len(a), window):
        rel = [abs(y - x) / max(abs(x), 1e-12) for x, y in zip(a[s:s + window], b[s:s + window])]
        out.append(sum(rel) / len(rel))
    return out


@dataclass
class LossParity:
    a: TrainCurve
    b: TrainCurve
    loss_windows: list[float]
    grad_norm_windows: list[float]
    grads: dict            # param -> metrics dict + verdict
    limit: float
    verdict: str

    @property
    def failed(self) -> bool:
        return self.verdict == M.FAIL

    @property
    def npu_result(self) -> bool:
        """True only when a real NPU took part: an emulated run never counts as an NPU result."""
        from phyx.backend import accelerator_of

        return any(accelerator_of(c.backend, c.emulated) == "npu" for c in (self.a, self.b))

    def to_dict(self) -> dict:
        side = lambda c: {"backend": c.backend, "label": c.label, "emulated": c.emulated,  # noqa: E731
                          "dtype": c.dtype, "loss": c.loss, "grad_norm": c.grad_norm}
        return {"a": side(self.a), "b": side(self.b), "loss_windows": self.loss_windows,
                "grad_norm_windows": self.grad_norm_windows, "limit": self.limit,
                "grads": self.grads, "verdict": self.verdict, "npu_result": self.npu_result,
                "emulated": self.a.emulated or self.b.emulated}

    def text(self) -> str:
        lines = [f"loss parity: {self.b.label} vs {self.a.label} ({self.a.dtype}, "
                 f"{len(self.a.loss)} steps)",
                 "  loss windows (mean rel err): " + ", ".join(f"{w:.2e}" for w in self.loss_windows),
                 "  grad-norm windows:           " + ", ".join(f"{w:.2e}" for w in self.grad_norm_windows)]
        bad = [n for n, g in self.grads.items() if g["status"] == M.FAIL]
        lines.append(f"  step-0 gradients: {len(self.grads) - len(bad)}/{len(self.grads)} parameters "
                     f"within threshold" + (f"; failing: {bad[:6]}" if bad else ""))
        if self.a.emulated or self.b.emulated:
            lines.append("  NOTE: an emulated side proves the translation, never NPU numerics")
        lines.append(f"  VERDICT: {self.verdict} (limit {self.limit:.0%} per window)")
        return "\n".join(lines)


def compare_training(a: TrainCurve, b: TrainCurve, window: int = 4, limit: float = WINDOW_LIMIT,
                     grad_scale: float = 10.0) -> LossParity:
    """grad_scale loosens the dtype threshold for gradients (a backward pass rounds more)."""
    lw = window_errors(a.loss, b.loss, window)
    gw = window_errors(a.grad_norm, b.grad_norm, window)
    thr = M.threshold_for(getattr(torch, a.dtype), grad_scale)
    grads = {}
    for n, ga in a.first_grads.items():
        gb = b.first_grads.get(n)
        if gb is None:
            grads[n] = {"status": M.FAIL, "reason": "missing on B"}
            continue
        m = M.compare(gb, ga)
        st, why = M.verdict(m, thr)
        grads[n] = {**m.as_dict(), "status": st, "reason": why}
    ok = (all(w <= limit for w in lw) and all(w <= limit for w in gw)
          and all(g["status"] != M.FAIL for g in grads.values())
          and all(math.isfinite(x) for x in a.loss + b.loss))
    return LossParity(a, b, lw, gw, grads, limit, M.PASS if ok else M.FAIL)


def train_spec(spec, backend: str, *, steps: int = 8, dtype=torch.float32, lr: float = 1e-3,
               policy: str = "fast") -> TrainCurve:
    """Train a registered model (phyx.tools.parity.zoo) with its own loss (spec.loss) on its fixed
    training set (spec.train_inputs). policy 'fast': the vendor kernels, forward and backward."""
    if spec.loss is None:
        raise ValueError(f"model {spec.name!r} has no training loss for loss parity; models with "
                         f"one: the tiny Wan / LingBot and Cosmos-Predict2 specs")
    if isinstance(dtype, str):
        from phyx.tools.parity.compare import DTYPES

        dtype = DTYPES[dtype]
    inputs = spec.train_inputs(spec.seed) if spec.train_inputs else spec.make_inputs(spec.seed)
    return train(spec.build, inputs, spec.forward, backend, steps=steps, dtype=dtype, lr=lr,
                 seed=spec.seed, policy=policy, make_batch=spec.loss.make_batch,
                 loss_fn=spec.loss.loss_fn, prepare=spec.prepare)


def run_spec_loss_parity(spec, backends: list[str], *, steps: int = 8, dtype="fp32",
                         window: int = 4, lr: float = 1e-3, policy: str = "fast"
                         ) -> tuple[list[TrainCurve], list[LossParity]]:
    """Train `spec` on each backend; compare each against the first. Returns (curves, results)."""
    _check_count("steps", steps, "--steps")
    _check_count("window", window, "--window")
    curves = [train_spec(spec, b, steps=steps, dtype=dtype, lr=lr, policy=policy) for b in backends]
    return curves, [compare_training(curves[0], c, window=window) for c in curves[1:]]


def run_loss_parity(build: Callable, inputs: dict, forward: Callable, backends: list[str], **kw) -> list[LossParity]:
    """Train on each backend; compare every one against the first."""
    curves = [train(build, inputs, forward, b, **kw) for b in backends]
    return [compare_training(curves[0], c) for c in curves[1:]]
