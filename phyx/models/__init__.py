"""Model families and one entry point, `phyx.models.load(path)`, that detects the checkpoint
format of a directory and hands it to the family that recognises it.

The built-in families are the adapters of phyx.models.registry (imported lazily, on the first
`load`/`detect`, so `import phyx.models` stays light). Code outside phyx can still add a family
with `register_family(name, detect_fn, load_fn)`:
  detect_fn(path: Path) -> bool   cheap (reads config.json only), never raises on foreign dirs
  load_fn(path: Path, **kw) -> torch.nn.Module
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from phyx.errors import CheckpointError, PhyxError

__all__ = ["MODEL_FAMILIES", "register_family", "detect", "load"]


@dataclass(frozen=True)
class ModelFamily:
    name: str
    detect: Callable[[Path], bool]
    load: Callable[..., object]


# Families registered from outside phyx (the built-in ones live in phyx.models.registry).
MODEL_FAMILIES: dict[str, ModelFamily] = {}


def register_family(name: str, detect_fn: Callable[[Path], bool], load_fn: Callable[..., object]) -> None:
    MODEL_FAMILIES[name] = ModelFamily(name, detect_fn, load_fn)


def _families() -> dict[str, ModelFamily]:
    from phyx.models import registry

    out = {a.name: ModelFamily(a.name, a.detect, a.load) for a in registry.families()}
    out.update(MODEL_FAMILIES)
    return out


def detect(path: str | os.PathLike) -> str:
    """The name of the one family that recognises `path`; a clear error otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"model path {path} is not a directory; phyx.models.load expects a "
                              f"checkpoint directory with a config.json")
    hits, refused = [], []
    for f in _families().values():
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
        raise CheckpointError(f"no model family recognises {path} (known: {sorted(_families())}). "
                              f"Check that it holds the config.json of a supported model.{why}")
    raise CheckpointError(f"{path} is claimed by several model families {hits}; pass family=... to load")


def load(path: str | os.PathLike, family: str | None = None, **kwargs):
    """Build and load the model in checkpoint directory `path` (format detected from the dir)."""
    fams = _families()
    name = family or detect(path)
    if name not in fams:
        raise CheckpointError(f"unknown model family {name!r}; known: {sorted(fams)}")
    return fams[name].load(Path(path), **kwargs)
