"""Determinism and debug switches for every backend in one call, and the flags in force (recorded
in every artifact manifest).

Call `set_determinism()` at process start: HCCL_DETERMINISTIC, ASCEND_LAUNCH_BLOCKING and
CUBLAS_WORKSPACE_CONFIG are read when the runtime / communicator initialises. Recommended order
on new hardware: fp32 with TF32 / HF32 off first (proves the translation), then bf16.
"""
from __future__ import annotations

import os

import torch

# Switches per backend family: env var -> value when determinism (and debug) are on.
CUDA_ENV = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
NPU_ENV = {"HCCL_DETERMINISTIC": "true",        # deterministic HCCL reductions
           "CLOSE_MATMUL_K_SHIFT": "1"}         # no K-axis split reordering in matmul
NPU_DEBUG_ENV = {"INF_NAN_MODE_ENABLE": "1",    # IEEE inf/nan instead of saturation
                 "ASCEND_LAUNCH_BLOCKING": "1"}  # synchronous launches: errors at the right op
CUDA_DEBUG_ENV = {"CUDA_LAUNCH_BLOCKING": "1"}
ALL_VARS = tuple({**CUDA_ENV, **NPU_ENV, **NPU_DEBUG_ENV, **CUDA_DEBUG_ENV})


def _family(backend) -> str:
    name = getattr(backend, "name", "cpu")
    if name.startswith("npu"):
        return "npu"
    return "cuda" if getattr(backend, "device_type", "cpu") == "cuda" else "cpu"


def set_determinism(backend=None, *, deterministic: bool = True, reduced_precision: bool = False,
                    debug: bool = False) -> dict:
    """Switch determinism (and optionally debug) on for the active (or given) backend.

    - torch.use_deterministic_algorithms(deterministic, warn_only=True)
    - TF32 / HF32 via backend.set_reduced_precision_matmul(reduced_precision)
    - cuda: CUBLAS_WORKSPACE_CONFIG; npu / npu-emulated: HCCL_DETERMINISTIC, CLOSE_MATMUL_K_SHIFT;
      debug adds INF_NAN_MODE_ENABLE, ASCEND_LAUNCH_BLOCKING (npu) or CUDA_LAUNCH_BLOCKING (cuda).
    Returns determinism_flags() afterwards."""
    import phyx

    b = backend or phyx.get_backend()
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    try:
        b.set_reduced_precision_matmul(reduced_precision)
    except Exception:  # a backend without the switch has nothing to turn off
        pass
    fam = _family(b)
    env = {}
    if deterministic:
        env.update(CUDA_ENV if fam == "cuda" else NPU_ENV if fam == "npu" else {})
    if debug:
        env.update(CUDA_DEBUG_ENV if fam == "cuda" else NPU_DEBUG_ENV if fam == "npu" else {})
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
            "env": {k: os.environ.get(k) for k in ALL_VARS}}
