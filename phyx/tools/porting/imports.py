"""Import one upstream file without running the __init__.py of the packages above it.

Upstream package __init__ files import pipelines, text encoders, training and parallel runtimes
(xfuser, deepspeed, ...) a DiT does not need. `import_bare("pkg.models.dit", root)` registers
every package directory under root/pkg as an empty package (its __init__.py is not run) and
imports only the named module and what that module imports itself."""
from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path


def _bare_package(name: str, path: Path) -> None:
    m = types.ModuleType(name, f"bare package {name} (its __init__.py was not run)")
    m.__path__ = [str(path)]
    m.__package__ = name
    m.__file__ = None
    sys.modules[name] = m
    parent, _, leaf = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], leaf, m)


def import_bare(name: str, root: str | Path | None = None):
    """Import module `name` (e.g. 'hyvideo.modules.models') from `root` (a checkout; default:
    the first sys.path entry holding the top package) without running package __init__ files."""
    top = name.split(".")[0]
    bases = [Path(root)] if root is not None else [Path(p) for p in sys.path if p]
    base = next((b for b in bases if (b / top).is_dir()), None)
    if base is None:
        raise ModuleNotFoundError(f"no package directory {top!r} under {[str(b) for b in bases][:5]}",
                                  name=top)
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))
    pkg_root = base / top
    dirs = [pkg_root] + sorted(d for d in pkg_root.rglob("*") if d.is_dir()
                               and "__pycache__" not in d.parts and any(d.rglob("*.py")))
    for d in dirs:
        pkg = ".".join((top,) + d.relative_to(pkg_root).parts)
        if pkg.replace(".", "").replace("_", "").isalnum() and not getattr(
                sys.modules.get(pkg), "__file__", None):
            _bare_package(pkg, d)
    return importlib.import_module(name)
