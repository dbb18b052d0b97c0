"""One module per model family: how to find its checkpoint parts, load its DiT, build its
conditioning and run one guided denoising step. generate.py drives them all the same way,
through the PipelineFamily each is declared as below (phyx/pipelines/protocol.py)."""
from __future__ import annotations

import importlib

from phyx.pipelines.protocol import PipelineFamily

_MODULES = {"wan": "phyx.pipelines.families.wan",
            "cosmos-predict2": "phyx.pipelines.families.cosmos_predict2",
            "cosmos3": "phyx.pipelines.families.cosmos3"}
_WITH_CHECKPOINT_SHIFT = {"cosmos3"}  # reads flow_shift from scheduler/scheduler_config.json


def family_module(name: str):
    if name not in _MODULES:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(_MODULES)}")
    return importlib.import_module(_MODULES[name])


def family(name: str) -> PipelineFamily:
    m = family_module(name)
    extra = {"checkpoint_shift": m.checkpoint_shift} if name in _WITH_CHECKPOINT_SHIFT else {}
    return PipelineFamily(name=name, PATCH=m.PATCH, required_parts=m.required_parts, load_dit=m.load_dit,
                          denoiser=m.Denoiser, **extra)
