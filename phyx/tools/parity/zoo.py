"""Parity specs for the real world models, one generic loop over phyx.models.registry: every
model the registry lists for the 'parity' tool (tiny seeded configs of Wan2.x t2v / i2v / ti2v,
LingBot-World, Cosmos-Predict2 Text2Image / Video2World, Cosmos3 video and video + sound)
becomes `phyx parity record --model NAME` (canonical name or alias) and a run_model_parity spec.

What a case runs is the family adapter's (phyx/models/<family>/adapter.py): seeded weights
through phyx.models.common.init (the same full weights for every parallel layout), inputs drawn
on the CPU from the seed (timesteps / sigmas float64 on the host), one teacher-forced step at the
DiT boundary, the layers to capture, and the training loss for loss parity where it has one.
"""
from __future__ import annotations

import dataclasses

from phyx.errors import ConfigError
from phyx.models import registry
from phyx.tools.parity.model import LossSpec, ParitySpec, register_model

ROPE_PROBE = {"rope_tables": "phyx.ops.rope_tables:to_cos_sin"}


def spec_for(entry: registry.ModelEntry, config: dict, seed: int) -> ParitySpec:
    """The parity spec of registry entry `entry`. `config`: overrides of its config, or a recorded
    spec config ({'family': ..., 'model': {...}}), so `phyx parity compare A --live` rebuilds
    exactly what A recorded."""
    ad = entry.adapter
    if "model" in config:
        cfg = ad.config_from_dict(config["model"])
    elif config:   # overrides go through the checked from_dict too (typed, ranged, memory-capped)
        base = entry.build_config()
        unknown = sorted(set(config) - {f.name for f in dataclasses.fields(base)})
        if unknown:
            raise ConfigError(f"{entry.name} config: unknown field(s) {unknown[:5]}")
        cfg = ad.config_from_dict({**ad.config_to_dict(base), **config})
    else:
        cfg = entry.build_config()
    tl = ad.loss(cfg, **entry.inputs)
    return ParitySpec(
        entry.name, build=lambda: ad.build(cfg, seed),
        make_inputs=lambda s: ad.make_inputs(cfg, s, **entry.inputs), forward=ad.forward,
        config={"family": ad.name, "model": ad.config_to_dict(cfg), "inputs": dict(entry.inputs)},
        layers=ad.capture_layers, seed=seed, functions=dict(ROPE_PROBE), prepare=ad.prepare,
        loss=LossSpec(tl.make_batch, tl.loss_fn, tl.name) if tl is not None else None,
        train_inputs=tl.train_inputs if tl is not None else None)


def _factory(entry):
    return lambda config, seed: spec_for(entry, config, seed)


MODELS = tuple(registry.names(registry.PARITY))
for _e in registry.models(registry.PARITY):
    register_model(_e.name, _factory(_e))
