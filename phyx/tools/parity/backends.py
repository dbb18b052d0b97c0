"""Which backends can take part in a parity run, and switching between them in one process."""
from __future__ import annotations

import contextlib

import phyx.backend as _reg
from phyx.ops import _dispatch

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
    try:
        return bool(getattr(_reg.backend_class(name), "emulated", False))
    except Exception:
        return name.endswith("-emulated")


def label(name: str) -> str:
    return f"{name} (EMULATED)" if is_emulated(name) else name


@contextlib.contextmanager
def using_backend(name: str, policy: str | None = None):
    """Make `name` the active backend for the block, then restore the previous one (or the
    not-yet-chosen state, so env selection still applies later)."""
    prev, prev_reason, prev_policy = _reg._active["backend"], _reg._active["reason"], _reg.get_policy()
    backend = _reg.set_backend(name, policy or prev_policy, _reason=f"phyx.tools.parity run on {name}")
    try:
        yield backend
    finally:
        if prev is not None:
            _reg.set_backend(prev.name, prev_policy, _reason=prev_reason)
        else:
            _dispatch.rebuild(None, prev_policy)
            for op in _dispatch.OP_NAMES:
                setattr(_dispatch.K, op, _dispatch._bootstrap(op))
            _reg._active["backend"], _reg._active["reason"] = None, None
