"""Send torch.cuda device calls, `.cuda()` and 'cuda' device strings to the active backend.

Under this shim 'cuda' means "the active phyx backend's device": torch.cuda.is_available()
is True (that device exists by construction), device_count / synchronize / Event / Stream /
memory stats / manual_seed go to backend.device, and `.cuda()`, `.to('cuda')`,
`device='cuda'` in the common tensor factories and `torch.autocast('cuda')` land on the
backend's device. On the cuda backend itself the shim installs nothing (torch.cuda is already
right, and wrapping it would route the backend's own calls back into the shim)."""
from __future__ import annotations

import contextlib
import functools

import torch

from phyx_patches._device import _index, backend, target, translate, translate_type

FACTORIES = ("zeros", "ones", "empty", "full", "arange", "linspace", "logspace", "eye", "tensor",
             "as_tensor", "randn", "rand", "randint", "randperm", "zeros_like", "ones_like",
             "empty_like", "full_like", "randn_like", "rand_like", "randint_like", "normal")


def _dev():
    return backend().device


def _index_of(device):
    if device is None or isinstance(device, int):
        return device
    return _index(device)


class _DeviceContext:
    """torch.cuda.device(i): switch the backend's current device for the block."""

    def __init__(self, device):
        self.idx = _index_of(device)
        self.prev = None

    def __enter__(self):
        if self.idx is not None:
            self.prev = _dev().current_device()
            _dev().set_device(self.idx)
        return self

    def __exit__(self, *exc):
        if self.prev is not None:
            _dev().set_device(self.prev)
        return False


def _memory(name):
    def fn(device=None):
        d = _dev()
        return getattr(d, name, d.memory_allocated)()
    fn.__name__ = name
    return fn


def _seed_device(seed):
    """Seed only the device generator, as torch.cuda.manual_seed does. (Not backend.device.
    manual_seed: torch.manual_seed itself calls torch.cuda.manual_seed_all, which would loop.)"""
    dt = backend().device_type
    if dt == "cpu":
        torch.default_generator.manual_seed(int(seed))
    else:
        getattr(torch, dt).manual_seed_all(int(seed))


def _amp_autocast(enabled=True, dtype=torch.float16, cache_enabled=True):
    return torch.autocast(device_type=backend().device_type, dtype=dtype, enabled=enabled,
                          cache_enabled=cache_enabled)


def _grad_scaler(*args, **kwargs):
    return torch.amp.GradScaler(backend().device_type, *args, **kwargs)


CUDA_FUNCS = {
    "is_available": lambda: True,
    "is_initialized": lambda: True,
    "init": lambda: None,
    "device_count": lambda: _dev().device_count(),
    "current_device": lambda: _dev().current_device(),
    "set_device": lambda device: _dev().set_device(_index_of(device) or 0),
    "synchronize": lambda device=None: _dev().synchronize(),
    "manual_seed": lambda seed: _seed_device(seed),
    "manual_seed_all": lambda seed: _seed_device(seed),
    "Event": lambda enable_timing=False, blocking=False, interprocess=False:
        _dev().Event(enable_timing=enable_timing),
    "Stream": lambda device=None, priority=0, **kw: _dev().Stream(),
    "stream": lambda s: _dev().stream(s) if s is not None else contextlib.nullcontext(),
    "current_stream": lambda device=None: _dev().current_stream(),
    "default_stream": lambda device=None: _dev().current_stream(),
    "device": _DeviceContext,
    "memory_allocated": _memory("memory_allocated"),
    "max_memory_allocated": _memory("max_memory_allocated"),
    "memory_reserved": _memory("memory_reserved"),
    "max_memory_reserved": _memory("max_memory_reserved"),
    "reset_peak_memory_stats": lambda device=None: _dev().reset_peak_memory_stats(),
    "empty_cache": lambda: _dev().empty_cache(),
    "get_device_name": lambda device=None: _dev().get_device_name(_index_of(device) or 0),
    # upstream feature checks ("Ampere or newer?") pick the bf16 / flash path, which the
    # other shims then serve on the active backend
    "get_device_capability": lambda device=None: (8, 0),
    "is_bf16_supported": lambda including_emulation=True: True,
}


def _tensor_cuda(self, device=None, non_blocking=False, memory_format=torch.preserve_format):
    return self.to(target(_index_of(device)), non_blocking=non_blocking, memory_format=memory_format)


def _module_cuda(self, device=None):
    return self.to(target(_index_of(device)))


def _wrap_to(orig):
    @functools.wraps(orig)
    def to(self, *args, **kwargs):
        if args and not isinstance(args[0], bool) and isinstance(args[0], (str, torch.device, int)):
            first = args[0]
            if isinstance(first, int):
                first = target(first)
            args = (translate(first),) + args[1:]
        if "device" in kwargs:
            kwargs["device"] = translate(kwargs["device"])
        return orig(self, *args, **kwargs)
    return to


def _wrap_factory(orig):
    @functools.wraps(orig)
    def factory(*args, **kwargs):
        if "device" in kwargs:
            kwargs["device"] = translate(kwargs["device"])
        return orig(*args, **kwargs)
    return factory


class _Autocast(torch.autocast):
    """torch.autocast that reads device_type 'cuda' as the backend's device type."""

    def __init__(self, device_type, *args, **kwargs):
        super().__init__(translate_type(device_type), *args, **kwargs)


def install(layer) -> bool:
    if backend().device_type == "cuda":
        return False
    for name, fn in CUDA_FUNCS.items():
        layer.set_attr(torch.cuda, name, fn)
    layer.set_attr(torch.cuda.amp, "autocast", _amp_autocast)
    layer.set_attr(torch.cuda.amp, "GradScaler", _grad_scaler)
    layer.set_attr(torch.Tensor, "cuda", _tensor_cuda)
    layer.set_attr(torch.nn.Module, "cuda", _module_cuda)
    layer.set_attr(torch.Tensor, "to", _wrap_to(torch.Tensor.to))
    layer.set_attr(torch.nn.Module, "to", _wrap_to(torch.nn.Module.to))
    for name in FACTORIES:
        layer.set_attr(torch, name, _wrap_factory(getattr(torch, name)))
    layer.set_attr(torch, "autocast", _Autocast)
    layer.set_attr(torch.amp, "autocast", _Autocast)
    return True
