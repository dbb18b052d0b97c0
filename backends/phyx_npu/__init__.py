"""Huawei Ascend NPU backend plug-in (entry points phyx.backends: npu, npu-emulated)."""
from phyx_npu.backend import NpuBackend

__all__ = ["NpuBackend"]
