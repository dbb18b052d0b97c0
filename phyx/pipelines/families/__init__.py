"""One module per model family: how to find its checkpoint parts, load its DiT, build its
conditioning and run one guided denoising step. generate.py drives them all the same way,
through the PipelineFamily each is declared as below (phyx/pipelines/protocol.py); which
module serves a family is its adapter's `pipeline` (phyx.models.registry)."""
from __future__ import annotations

import importlib

from phyx.pipelines.protocol import PipelineFamily

_WITH_CHECKPOINT_SHIFT = {"cosmos3"}  # reads flow_shift from scheduler/scheduler_config.json


def family_module(name: str):
    from phyx.models import registry

    return importlib.import_module(registry.family(name).pipeline)


def family(name: str) -> PipelineFamily:
    m = family_module(name)
    extra = {"checkpoint_shift": m.checkpoint_shift} if name in _WITH_CHECKPOINT_SHIFT else {}
    return PipelineFamily(name=name, PATCH=m.PATCH, required_parts=m.required_parts, load_dit=m.load_dit,
                          denoiser=m.Denoiser, **extra)
