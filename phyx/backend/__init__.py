"""Backend selection: explicit set_backend() > env PHYX_BACKEND > autodetect (NPU before
CUDA, since vendor shims can make torch.cuda.is_available() lie; CPU last).

Vendors register through the entry-point group "phyx.backends"; the in-tree plug-ins are also
found by module path so a source checkout works before `pip install -e .`.
"""
from __future__ import annotations

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
AUTODETECT_ORDER = ("npu", "cuda")  # then cpu

_active: dict = {"backend": None, "reason": None}


def _load(spec: str):
    mod, _, attr = spec.partition(":")
    return getattr(importlib.import_module(mod), attr)


def registered_backends() -> dict[str, str]:
    """name -> 'module:Class' for every known backend (built-in, entry points, in-tree)."""
    found = {"cpu": "phyx.backend.cpu:CpuBackend"}
    found.update(_IN_TREE)
    try:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            found[ep.name] = ep.value
    except Exception:  # broken metadata must not break selection
        pass
    return found


def backend_class(name: str) -> type[Backend]:
    known = registered_backends()
    if name not in known:
        raise UnknownBackendError(
            f"unknown backend {name!r}; known backends: {', '.join(sorted(known))}. "
            f"A third-party vendor registers one through the entry-point group {ENTRY_POINT_GROUP!r}.")
    return CpuBackend if name == "cpu" else _load(known[name])


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
    _apply_precision(backend, policy)
    _dispatch.rebuild(backend, policy)
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


def autodetect() -> tuple[str, str]:
    tried = []
    for name in AUTODETECT_ORDER:
        try:
            ok, why = backend_class(name).probe()
        except Exception as e:
            ok, why = False, f"plug-in failed to load: {e}"
        if ok:
            return name, f"autodetected ({name}: {why})"
        tried.append(f"{name}: {why}")
    return "cpu", "autodetected: no accelerator (" + "; ".join(tried) + ")"


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
