"""Model families and one entry point, `phyx.models.load(path)`, that detects the checkpoint
format of a directory and hands it to the family that recognises it.

A family registers itself with `register_family(name, detect_fn, load_fn)`:
  detect_fn(path: Path) -> bool   cheap (reads config.json only), never raises on foreign dirs
  load_fn(path: Path, **kw) -> torch.nn.Module
Built-in families are imported lazily on the first `load`/`detect` (module names in
BUILTIN_FAMILY_MODULES), so `import phyx.models` stays light.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from phyx.errors import CheckpointError, PhyxError

__all__ = ["MODEL_FAMILIES", "register_family", "detect", "load", "BUILTIN_FAMILY_MODULES"]


@dataclass(frozen=True)
class ModelFamily:
    name: str
    detect: Callable[[Path], bool]
    load: Callable[..., object]


MODEL_FAMILIES: dict[str, ModelFamily] = {}

# Packages that call register_family at import. Other families append their module here.
BUILTIN_FAMILY_MODULES: list[str] = ["phyx.models.wan", "phyx.models.cosmos_predict2", "phyx.models.cosmos3"]
_imported: set[str] = set()


def register_family(name: str, detect_fn: Callable[[Path], bool], load_fn: Callable[..., object]) -> None:
    MODEL_FAMILIES[name] = ModelFamily(name, detect_fn, load_fn)


def _import_builtins() -> None:
    for mod in BUILTIN_FAMILY_MODULES:
        if mod not in _imported:
            importlib.import_module(mod)
            _imported.add(mod)


def detect(path: str | os.PathLike) -> str:
    """The name of the one family that recognises `path`; a clear error otherwise."""
    _import_builtins()
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"model path {path} is not a directory; phyx.models.load expects a "
                              f"checkpoint directory with a config.json")
    hits, refused = [], []
    for f in MODEL_FAMILIES.values():
        try:
            if f.detect(path):
                hits.append(f.name)
        except PhyxError as e:            # a family that reads a bad file says why, in one line
            refused.append(f"{f.name}: {e}")
        except Exception as e:            # detect must never raise on a foreign directory
            refused.append(f"{f.name}: {type(e).__name__}: {str(e)[:200]}")
    if len(hits) == 1:
        return hits[0]
    if not hits:
        why = f" ({'; '.join(refused)})" if refused else ""
        raise CheckpointError(f"no model family recognises {path} (known: {sorted(MODEL_FAMILIES)}). "
                              f"Check that it holds the config.json of a supported model.{why}")
    raise CheckpointError(f"{path} is claimed by several model families {hits}; pass family=... to load")


def load(path: str | os.PathLike, family: str | None = None, **kwargs):
    """Build and load the model in checkpoint directory `path` (format detected from the dir)."""
    _import_builtins()
    name = family or detect(path)
    if name not in MODEL_FAMILIES:
        raise CheckpointError(f"unknown model family {name!r}; known: {sorted(MODEL_FAMILIES)}")
    return MODEL_FAMILIES[name].load(Path(path), **kwargs)
