"""The contract between `generate()` and a model family (phyx/pipelines/families/*).

A family declares its DiT patch, the checkpoint parts it needs, how to load its DiT, its
`Denoiser`, and optionally the flow shift its checkpoint carries. A Denoiser runs the guided
loop: init_latents -> (predict, step) per step -> final, and describes itself for the sidecar;
`extra_outputs` (e.g. Cosmos3's sound) defaults to none. Defaults live here, so the orchestrator
never probes with hasattr.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch


class Denoiser(ABC):
    """One family's guided denoising loop over a RunContext (`run`) and its loaded DiT."""

    @abstractmethod
    def init_latents(self, noise: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def predict(self, x: torch.Tensor, i: int) -> torch.Tensor: ...

    @abstractmethod
    def step(self, pred: torch.Tensor, i: int, x: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def final(self, x: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def describe(self) -> dict: ...

    def extra_outputs(self) -> dict:
        """Outputs besides the video, e.g. {'wav': (waveform, sample_rate)}; none by default."""
        return {}


def _no_checkpoint_shift(ckpt: Path) -> float | None:
    return None


@dataclass(frozen=True)
class PipelineFamily:
    """A model family as generate() sees it (built in phyx/pipelines/families/__init__.py)."""
    name: str
    PATCH: tuple[int, int, int]
    required_parts: Callable[[Path, object], list]     # (ckpt, spec) -> [(path, what)]
    load_dit: Callable                                  # (ckpt, spec, dtype, device) -> model
    denoiser: Callable[[object, object], Denoiser]      # (run, model) -> Denoiser
    checkpoint_shift: Callable[[Path], float | None] = _no_checkpoint_shift

    def make_denoiser(self, run, model) -> Denoiser:
        return self.denoiser(run, model)
