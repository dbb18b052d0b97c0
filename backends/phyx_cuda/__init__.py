"""CUDA backend plug-in (entry point phyx.backends: cuda)."""
from phyx_cuda.backend import CudaBackend

__all__ = ["CudaBackend"]
