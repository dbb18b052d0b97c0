"""One device API for model code: never torch.cuda or torch.npu directly."""
from __future__ import annotations

import torch

from phyx.backend import get_backend


def device_type() -> str:
    return get_backend().device_type


def torch_device(index: int | None = None) -> torch.device:
    """The torch.device for local device `index` (default: the current one, i.e. this rank's
    after set_device; never a hard-coded device 0)."""
    b = get_backend()
    return b.torch_device(b.device.current_device() if index is None else index)


def autocast_device_type() -> str:
    return get_backend().device_type


def autocast(dtype=torch.bfloat16, enabled: bool = True):
    return torch.autocast(device_type=autocast_device_type(), dtype=dtype, enabled=enabled)


def set_device(index: int) -> None:
    get_backend().device.set_device(index)


def synchronize() -> None:
    get_backend().device.synchronize()


def manual_seed(seed: int) -> None:
    get_backend().device.manual_seed(seed)


def Stream(*a, **k):  # noqa: N802
    return get_backend().device.Stream(*a, **k)


def Event(enable_timing: bool = False):  # noqa: N802
    return get_backend().device.Event(enable_timing=enable_timing)


def memory_allocated() -> int:
    return get_backend().device.memory_allocated()


def max_memory_allocated() -> int:
    return get_backend().device.max_memory_allocated()


def reset_peak_memory_stats() -> None:
    get_backend().device.reset_peak_memory_stats()


def empty_cache() -> None:
    get_backend().device.empty_cache()


def device_count() -> int:
    return get_backend().device.device_count()
