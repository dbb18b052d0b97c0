"""One module per model family: how to find its checkpoint parts, load its DiT, build its
conditioning and run one guided denoising step. generate.py drives them all the same way."""
from __future__ import annotations

import importlib

_MODULES = {"wan": "phyx.pipelines.families.wan",
            "cosmos-predict2": "phyx.pipelines.families.cosmos_predict2",
            "cosmos3": "phyx.pipelines.families.cosmos3"}


def family_module(name: str):
    if name not in _MODULES:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(_MODULES)}")
    return importlib.import_module(_MODULES[name])
