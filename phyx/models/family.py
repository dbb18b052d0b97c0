"""The contract every model family implements once, in phyx/models/<family>/adapter.py.

Tools never import a family's internals: the parity zoo, the model benchmarks, the multi-GPU
harness, `phyx generate` and phyx.models.load/detect all go through a FamilyAdapter found in
phyx.models.registry. FamilyAdapterBase supplies the shared parts (config lookup, seeded builds
through phyx.models.common, lazy parallel plans); a family fills in the rest.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import torch
from torch import nn

from phyx.errors import UnknownModelError
from phyx.models.common.init import init_seeded_
from phyx.models.common.meta import on_meta

__all__ = ["FamilyAdapter", "FamilyAdapterBase", "DiffusersPeer", "TrainingLoss"]


@dataclass(frozen=True)
class DiffusersPeer:
    """diffusers' implementation of a phyx config: the numerical oracle and the benchmark peer.
    build(dtype, device) -> the diffusers module (weights uninitialised or random);
    state_dict(phyx_state_dict) -> the same weights under diffusers' keys;
    forward(peer_model, inputs) -> what the adapter's forward(phyx_model, inputs) returns, from
    the same inputs dict (make_inputs)."""
    build: Callable[..., nn.Module]
    state_dict: Callable[[dict], dict]
    forward: Callable[[nn.Module, dict], Any]


@dataclass(frozen=True)
class TrainingLoss:
    """make_batch(train_inputs, step, seed) draws everything random on the CPU from (seed, step);
    loss_fn(model, batch, device, dtype, forward) -> scalar loss; train_inputs(seed) -> the fixed set."""
    make_batch: Callable
    loss_fn: Callable
    train_inputs: Callable[[int], dict]
    name: str = "loss"


@runtime_checkable
class FamilyAdapter(Protocol):
    name: str                                  # family name, a key of registry.FAMILIES
    configs: Mapping[str, Any]                 # real model configs by name
    tiny_configs: Mapping[str, Any]            # toy configs (tests, demo, parity) by name
    capture_layers: tuple[str, ...]            # parity capture patterns
    pipeline: str                              # module of the `phyx generate` family (denoiser)

    @property
    def tp_plan(self) -> Any: ...              # phyx.models.<family>.plan.TP_PLAN or None
    @property
    def sp_plan(self) -> Any: ...              # phyx.models.<family>.plan.SP_PLAN or None

    def config(self, name: str) -> Any: ...
    def config_from_dict(self, d: dict) -> Any: ...
    def num_layers(self, cfg) -> int: ...
    def with_layers(self, cfg, layers: int) -> Any: ...
    def num_heads(self, cfg) -> int: ...
    def construct(self, cfg) -> nn.Module: ...  # the module for the current parallel state
    def build(self, cfg, seed: int = 0, *, dtype=torch.float32, device="cpu", draw=None) -> nn.Module: ...
    def keep_fp32(self, param_name: str) -> bool: ...
    def prepare(self, model: nn.Module, device, dtype: torch.dtype) -> nn.Module: ...
    def detect(self, path: Path) -> bool: ...
    def load(self, path: Path, **kw) -> nn.Module: ...
    def save(self, model: nn.Module, directory, **kw) -> Path: ...
    def make_inputs(self, cfg, seed: int, **opts) -> dict: ...
    def forward(self, model: nn.Module, inputs: dict, device=None, dtype=None) -> Any: ...
    def loss(self, cfg, **opts) -> TrainingLoss | None: ...
    def diffusers_peer(self, cfg) -> DiffusersPeer: ...


def save_diffusers_layout(model, directory) -> Path:
    """A model whose config has to_diffusers_dict(), saved in the diffusers layout:
    config.json + diffusion_pytorch_model.safetensors (both written atomically)."""
    import json

    from phyx.io.checkpoint import save_safetensors_atomic, write_text_atomic

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(directory / "config.json", json.dumps(model.config.to_diffusers_dict(), indent=1))
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_safetensors_atomic(sd, directory / "diffusion_pytorch_model.safetensors")
    return directory


class FamilyAdapterBase:
    """Defaults shared by the built-in adapters. A subclass sets name, config_class, configs,
    tiny_configs, capture_layers, pipeline, LAYERS_FIELD / HEADS_FIELD and implements construct,
    detect, load, save, make_inputs, forward and diffusers_peer."""
    name = ""
    config_class: type = object
    configs: Mapping[str, Any] = {}
    tiny_configs: Mapping[str, Any] = {}
    capture_layers: tuple[str, ...] = ()
    pipeline = ""
    LAYERS_FIELD = "num_layers"
    HEADS_FIELD = "num_heads"

    # ---- parallel plans: read lazily from phyx.models.<family>.plan when it exists -------------
    def _plan(self, attr: str):
        pkg = type(self).__module__.rpartition(".")[0]
        try:
            mod = importlib.import_module(f"{pkg}.plan")
        except ModuleNotFoundError as e:
            if e.name != f"{pkg}.plan":
                raise
            return None
        return getattr(mod, attr, None)

    @property
    def tp_plan(self):
        return self._plan("TP_PLAN")

    @property
    def sp_plan(self):
        return self._plan("SP_PLAN")

    # ---- configs -------------------------------------------------------------------------------
    def config(self, name: str):
        for table in (self.configs, self.tiny_configs):
            if name in table:
                return table[name]
        raise UnknownModelError(f"unknown {self.name} config {name!r}; known: "
                                f"{', '.join(sorted([*self.configs, *self.tiny_configs]))}")

    def config_from_dict(self, d: dict):
        return self.config_class.from_dict(d)

    def config_to_dict(self, cfg) -> dict:
        return cfg.to_dict()

    def num_layers(self, cfg) -> int:
        return getattr(cfg, self.LAYERS_FIELD)

    def with_layers(self, cfg, layers: int | None):
        """The same config with its first `layers` blocks only (None: unchanged)."""
        if layers is None:
            return cfg
        full = self.num_layers(cfg)
        if not 1 <= layers <= full:
            raise ValueError(f"layers must be in 1..{full} for this model, got {layers}")
        return cfg.replace(**{self.LAYERS_FIELD: layers})

    def num_heads(self, cfg) -> int:
        return getattr(cfg, self.HEADS_FIELD)

    # ---- building ------------------------------------------------------------------------------
    def construct(self, cfg) -> nn.Module:
        raise NotImplementedError

    def keep_fp32(self, param_name: str) -> bool:
        return False

    def build(self, cfg, seed: int = 0, *, dtype=torch.float32, device="cpu", draw=None) -> nn.Module:
        """The model for the current parallel state with seeded weights (phyx.models.common.init:
        the same full weights whatever the layout; `draw` as there), in eval mode."""
        model = on_meta(lambda: self.construct(cfg))
        init_seeded_(model, seed, dtype, device, draw=draw, keep_fp32=self.keep_fp32)
        return model.eval()

    def prepare(self, model: nn.Module, device, dtype: torch.dtype) -> nn.Module:
        """The model on `device` in the run dtype, keep_fp32 parameters left in fp32."""
        model = model.to(device)
        for name, p in model.named_parameters():
            if not self.keep_fp32(name) and p.is_floating_point():
                p.data = p.data.to(dtype)
        return model

    def to_device(self, inputs: dict, device) -> dict:
        return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}

    def loss(self, cfg, **opts) -> TrainingLoss | None:
        return None
