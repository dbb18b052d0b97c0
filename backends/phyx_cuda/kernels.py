"""Optional CUDA kernels: flash-attn and Triton. Each is registered only when importable."""
from __future__ import annotations


def extra_kernels():
    return []
