"""One module per model family: how to find its checkpoint parts, load its DiT, build its
conditioning and run one guided denoising step. generate.py drives them all the same way; which
module serves a family is its adapter's `pipeline` (phyx.models.registry)."""
from __future__ import annotations

import importlib


def family_module(name: str):
    from phyx.models import registry

    return importlib.import_module(registry.family(name).pipeline)
