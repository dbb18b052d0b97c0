"""Determinism and debug switches for every backend in one call, and the flags in force (recorded
in every artifact manifest).

Call `set_determinism()` at process start: HCCL_DETERMINISTIC, ASCEND_LAUNCH_BLOCKING and
CUBLAS_WORKSPACE_CONFIG are read when the runtime / communicator initialises. Recommended order
on new hardware: fp32 with TF32 / HF32 off first (proves the translation), then bf16.
"""
from __future__ import annotations

import os

import torch


def determinism_env_vars(backend=None) -> tuple[str, ...]:
    """Every env switch a registered backend (and `backend`) names in determinism_env(debug=True):
    all are recorded in manifests, set or not, so two machines' manifests line up."""
    from phyx.backend import backend_class, registered_backends

    classes = [type(backend)] if backend is not None else []
    for name in registered_backends():
        try:
            classes.append(backend_class(name))
        except Exception:  # a plug-in that fails to import names nothing
            continue
    names: dict[str, None] = {}
    for cls in classes:
        names.update(dict.fromkeys(cls.determinism_env(debug=True)))
    return tuple(names)


def set_determinism(backend=None, *, deterministic: bool = True, reduced_precision: bool = False,
                    debug: bool = False) -> dict:
    """Switch determinism (and optionally debug) on for the active (or given) backend.

    - torch.use_deterministic_algorithms(deterministic, warn_only=True)
    - TF32 / HF32 via backend.set_reduced_precision_matmul(reduced_precision)
    - the backend's determinism_env(debug): e.g. CUBLAS_WORKSPACE_CONFIG on CUDA, HCCL_DETERMINISTIC
      and CLOSE_MATMUL_K_SHIFT on the NPU; debug adds synchronous launches (and IEEE inf/nan).
    Returns determinism_flags() afterwards."""
    import phyx

    b = backend or phyx.get_backend()
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    b.set_reduced_precision_matmul(reduced_precision)
    base = b.determinism_env(debug=False)
    with_debug = b.determinism_env(debug=True)
    env = dict(base) if deterministic else {}
    if debug:
        env.update({k: v for k, v in with_debug.items() if k not in base})
    for k, v in env.items():
        os.environ[k] = v
    return determinism_flags(b)


def determinism_flags(backend=None) -> dict:
    """What is in force now (for the manifest)."""
    import phyx

    b = backend or phyx.get_backend()
    try:
        precision = b.precision_flags()
    except Exception as e:
        precision = {"error": str(e)}
    return {"torch_deterministic": torch.are_deterministic_algorithms_enabled(),
            "torch_deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "precision": precision,
            "env": {k: os.environ.get(k) for k in determinism_env_vars(b)}}
