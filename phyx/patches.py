"""phyx.patches: the scoped CUDA-compatibility shims (package phyx_patches under patches/).

Opt-in only: importing this module patches nothing. See phyx_patches for the details."""
try:
    from phyx_patches import SHIMS, active, available, disable, enable, scope
except ModuleNotFoundError as e:  # pragma: no cover - only when the install is stale
    if e.name != "phyx_patches":
        raise
    raise ImportError("phyx.patches needs the phyx_patches package (patches/phyx_patches); "
                      "reinstall phyx with `pip install -e .` from the repository root") from e

__all__ = ["enable", "disable", "scope", "available", "active", "SHIMS"]
