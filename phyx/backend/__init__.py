"""Backend selection: explicit set_backend() > env PHYX_BACKEND > autodetect.

Autodetect probes every registered backend that is not emulated, highest `priority` first, and
takes the first available one: the NPU (20) before CUDA (10, vendor shims can make
torch.cuda.is_available() lie), the CPU (0) last. Vendors register through the entry-point group
"phyx.backends"; the in-tree plug-ins are also found by module path so a source checkout works
before `pip install -e .`; EXTRA_BACKENDS (or register_backend) adds one for this process only.

using(name, policy) runs a block under another backend and restores the previous state;
reset() returns to the state of a fresh process (no backend chosen, no pins, policy 'fast').
"""
from __future__ import annotations

import contextlib
import importlib
import os
from importlib import metadata

from phyx.backend.base import POLICIES, Backend
from phyx.backend.cpu import CpuBackend
from phyx.errors import BackendUnavailableError, UnknownBackendError
from phyx.ops import _dispatch

ENTRY_POINT_GROUP = "phyx.backends"
_IN_TREE = {"cuda": "phyx_cuda:CudaBackend", "npu": "phyx_npu:NpuBackend",
            "npu-emulated": "phyx_npu.emulated:NpuEmulatedBackend"}
DEFAULT_POLICY = "fast"
# In-process registrations (tests, notebooks): name -> Backend subclass or 'module:Class'.
EXTRA_BACKENDS: dict = {}

_active: dict = {"backend": None, "reason": None}


def _load(spec):
    if not isinstance(spec, str):
        return spec
    mod, _, attr = spec.partition(":")
    return getattr(importlib.import_module(mod), attr)


def register_backend(name: str, target) -> None:
    """Register a backend for this process: a Backend subclass or 'module:Class'. Installed
    plug-ins use the entry-point group "phyx.backends" instead."""
    EXTRA_BACKENDS[name] = target


def registered_backends() -> dict[str, str]:
    """name -> 'module:Class' for every known backend (built-in, in-tree, entry points, extra)."""
    found = {"cpu": "phyx.backend.cpu:CpuBackend"}
    found.update(_IN_TREE)
    try:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            found[ep.name] = ep.value
    except Exception:  # broken metadata must not break selection
        pass
    for name, target in EXTRA_BACKENDS.items():
        found[name] = target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"
    return found


def backend_class(name: str) -> type[Backend]:
    known = registered_backends()
    if name not in known:
        raise UnknownBackendError(
            f"unknown backend {name!r}; known backends: {', '.join(sorted(known))}. "
            f"A third-party vendor registers one through the entry-point group {ENTRY_POINT_GROUP!r}.")
    if name == "cpu":
        return CpuBackend
    return _load(EXTRA_BACKENDS.get(name, known[name]))


def accelerator_of(name: str, emulated: bool = False) -> str | None:
    """The hardware a run recorded on backend `name` stands for ('cpu', 'gpu', 'npu'), from the
    backend's declared `accelerator`; None for an emulated run or a name not registered here (a
    name read from an artifact is only looked up, never imported as code)."""
    if emulated or not isinstance(name, str) or name not in registered_backends():
        return None
    cls = backend_class(name)
    return None if cls.emulated else cls.accelerator


def probe_all() -> dict[str, tuple[bool, str]]:
    out = {}
    for name in registered_backends():
        try:
            out[name] = backend_class(name).probe()
        except Exception as e:  # a plug-in that fails to import is reported, not fatal
            out[name] = (False, f"plug-in failed to load: {e}")
    return out


def set_backend(name: str, policy: str | None = None, *, _reason: str | None = None) -> Backend:
    """Make `name` the process's backend. policy: 'reference' or 'fast' (default: keep)."""
    cls = backend_class(name)
    ok, why = cls.probe()
    if not ok:
        raise BackendUnavailableError(f"backend {name!r} is not available here: {why}")
    backend = cls()
    policy = policy or _dispatch.get_policy()
    if policy not in POLICIES:
        raise ValueError(f"unknown kernel policy {policy!r}; choose one of {POLICIES}")
    _dispatch.rebuild(backend, policy)   # raises before any change if a pin does not exist here
    _apply_precision(backend, policy)
    _active["backend"] = backend
    _active["reason"] = _reason or f"set explicitly: phyx.set_backend({name!r})"
    return backend


def set_policy(policy: str) -> None:
    backend = get_backend()
    _dispatch.rebuild(backend, policy)
    _apply_precision(backend, policy)


def _apply_precision(backend: Backend, policy: str) -> None:
    """'reference' switches TF32 / HF32 off. 'fast' leaves the vendor's precision flags as they
    are (it selects kernels, it does not silently lower fp32 matmul precision); turn them on
    explicitly with backend.set_reduced_precision_matmul(True) or env PHYX_ALLOW_TF32=1."""
    if policy == "reference":
        backend.set_reduced_precision_matmul(False)
    elif os.environ.get("PHYX_ALLOW_TF32") == "1":
        backend.set_reduced_precision_matmul(True)


def get_policy() -> str:
    return _dispatch.get_policy()


def autodetect_candidates() -> tuple[list[tuple[int, str, type]], list[str]]:
    """([(priority, name, class)] highest priority first, [plug-ins that failed to load]).
    Emulated backends are never candidates."""
    found, broken = [], []
    for name in registered_backends():
        try:
            cls = backend_class(name)
        except Exception as e:  # a plug-in that fails to import is reported, not fatal
            broken.append(f"{name}: plug-in failed to load: {e}")
            continue
        if not getattr(cls, "emulated", False):
            found.append((int(getattr(cls, "priority", 0)), name, cls))
    found.sort(key=lambda t: (-t[0], t[1] != "cpu", t[1]))   # cpu first among its equals
    return found, broken


def autodetect() -> tuple[str, str]:
    """(name, why): the available non-emulated backend of highest priority."""
    candidates, tried = autodetect_candidates()
    for _, name, cls in candidates:
        try:
            ok, why = cls.probe()
        except Exception as e:  # probe must not raise; one that does is skipped
            ok, why = False, f"probe failed: {type(e).__name__}: {e}"
        if ok:
            if name == "cpu":
                return name, "autodetected: no accelerator (" + "; ".join(tried) + ")"
            return name, f"autodetected ({name}: {why})"
        tried.append(f"{name}: {why}")
    return "cpu", "autodetected: no backend probed available (" + "; ".join(tried) + ")"


def get_backend() -> Backend:
    if _active["backend"] is None:
        env = os.environ.get("PHYX_BACKEND")
        if env:
            set_backend(env, os.environ.get("PHYX_POLICY"), _reason=f"env PHYX_BACKEND={env}")
        else:
            name, why = autodetect()
            set_backend(name, os.environ.get("PHYX_POLICY"), _reason=why)
    return _active["backend"]


def selection_reason() -> str:
    get_backend()
    return _active["reason"]


@contextlib.contextmanager
def using(name: str, policy: str | None = None):
    """Run the block under backend `name` (and `policy`; default: keep the current one), then
    restore the previous backend, policy and kernel pins, or the not-yet-chosen state, so env
    selection still applies later. Yields the backend."""
    prev, prev_reason = _active["backend"], _active["reason"]
    prev_policy, prev_pins = _dispatch.get_policy(), _dispatch.pins()
    try:   # a switch that fails half-way (a pin this backend lacks) is undone as well
        yield set_backend(name, policy or prev_policy, _reason=f"phyx.backend.using({name!r})")
    finally:
        _dispatch.unbind(prev_policy, prev_pins)
        if prev is not None:
            _apply_precision(prev, prev_policy)
            _dispatch.rebuild(prev, prev_policy)
        _active["backend"], _active["reason"] = prev, prev_reason


def reset() -> None:
    """Back to a fresh process: no backend chosen (the next op call or get_backend() selects one
    from PHYX_BACKEND or autodetect), no kernel pins, policy 'fast'."""
    _dispatch.unbind(DEFAULT_POLICY, pins={})
    _active["backend"], _active["reason"] = None, None


def host_env_vars() -> tuple[str, ...]:
    """Host-side environment variables that change timings or results, declared by every
    registered backend (recorded in result files whichever backend ran)."""
    names: dict[str, None] = {}
    for name in registered_backends():
        try:
            names.update(dict.fromkeys(backend_class(name).host_env_vars))
        except Exception:  # a plug-in that fails to import declares nothing
            continue
    return tuple(names)
