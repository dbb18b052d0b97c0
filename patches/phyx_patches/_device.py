"""Where 'cuda' goes under the shims: the active phyx backend's device."""
from __future__ import annotations

import torch


def backend():
    import phyx

    return phyx.get_backend()


def target(index=None) -> torch.device:
    b = backend()
    if b.device_type == "cpu":
        return torch.device("cpu")
    return b.torch_device(index if index is not None else b.device.current_device())


def _index(dev) -> int | None:
    if isinstance(dev, torch.device):
        return dev.index
    if isinstance(dev, str) and ":" in dev:
        return int(dev.split(":", 1)[1])
    return None


def translate(dev):
    """'cuda', 'cuda:1', torch.device('cuda') -> the backend's device; anything else as is."""
    if isinstance(dev, str) and (dev == "cuda" or dev.startswith("cuda:")):
        return target(_index(dev))
    if isinstance(dev, torch.device) and dev.type == "cuda":
        return target(dev.index)
    return dev


def translate_type(device_type: str) -> str:
    return backend().device_type if device_type == "cuda" else device_type
