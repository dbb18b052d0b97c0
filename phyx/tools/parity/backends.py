"""Which backends can take part in a parity run, and switching between them in one process."""
from __future__ import annotations

import phyx.backend as _reg

EMULATED_NOTE = "EMULATED: proves the NPU translation on the CPU, not NPU numerics"


def available_backends() -> dict[str, str]:
    """name -> probe detail for every backend that probes available here."""
    return {n: why for n, (ok, why) in _reg.probe_all().items() if ok}


def resolve_backends(requested: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """(usable names in order, {skipped name: why}). Never raises for a missing plug-in: a
    backend being written, or a vendor absent here, is skipped with a note."""
    probes = _reg.probe_all()
    if not requested:
        # cpu first (the baseline for error ratios), then every other available one.
        requested = ["cpu"] + sorted(n for n in probes if n != "cpu")
    usable, skipped = [], {}
    known = _reg.registered_backends()
    for name in requested:
        if name not in known:
            skipped[name] = f"unknown backend (known: {', '.join(sorted(known))})"
            continue
        ok, why = probes.get(name, (False, "not probed"))
        if ok:
            if name not in usable:
                usable.append(name)
        else:
            skipped[name] = why
    return usable, skipped


def is_emulated(name: str) -> bool:
    """The backend's declared `emulated` flag (False when its plug-in does not load)."""
    try:
        return bool(_reg.backend_class(name).emulated)
    except Exception:  # unknown or broken plug-in: it cannot have run, so nothing was emulated
        return False


def label(name: str) -> str:
    return f"{name} (EMULATED)" if is_emulated(name) else name


# The block runs under `name`, then the previous backend (or the not-yet-chosen state) returns.
using_backend = _reg.using
