"""The torch.cuda functions and types the torch_cuda shim serves on the active backend.

Types stay types: `torch.cuda.Stream`, `torch.cuda.Event` and `torch.Generator` are replaced by
classes (so library annotations such as `torch.cuda.Stream | None` and `isinstance` checks keep
working) whose constructor returns the backend's object. Whatever torch.cuda function is not
served here and needs a CUDA runtime fails in torch.cuda._lazy_init, which the shim replaces
with a one-line error naming phyx and the way out."""
from __future__ import annotations

import contextlib
import os
import sys
import types

import torch

from phyx_patches._device import _index, backend, translate

REAL_GENERATOR = torch.Generator


class NotServedError(RuntimeError):
    """A CUDA-only call the phyx_patches shims do not serve on this backend."""


def _dev():
    return backend().device


def _vendor():
    """torch.npu (or another vendor's torch module) when the backend is not the CPU, else None."""
    dt = backend().device_type
    return None if dt == "cpu" else getattr(torch, dt, None)


def index_of(device):
    if device is None or isinstance(device, int):
        return device
    return _index(device)


# --- types ---------------------------------------------------------------------------------
class _DelegatingMeta(type):
    """isinstance(x, Shim) is True for the backend objects the shim class hands out."""

    def __instancecheck__(cls, obj):
        return any(isinstance(obj, t) for t in cls._delegate_types()) or type.__instancecheck__(cls, obj)

    def __subclasscheck__(cls, sub):
        return any(issubclass(sub, t) for t in cls._delegate_types()) or type.__subclasscheck__(cls, sub)


class Stream(metaclass=_DelegatingMeta):
    """torch.cuda.Stream under the shim: the active backend's stream."""

    def __new__(cls, device=None, priority=0, **kwargs):
        return _dev().Stream()

    @classmethod
    def _delegate_types(cls):
        return (type(_dev().current_stream()),)


class Event(metaclass=_DelegatingMeta):
    """torch.cuda.Event under the shim: the active backend's event."""

    def __new__(cls, enable_timing=False, blocking=False, interprocess=False, **kwargs):
        return _dev().Event(enable_timing=enable_timing)

    @classmethod
    def _delegate_types(cls):
        return (type(_dev().Event()),)


class _GeneratorMeta(_DelegatingMeta, type(REAL_GENERATOR)):
    pass


class Generator(REAL_GENERATOR, metaclass=_GeneratorMeta):
    """torch.Generator under the shim: device 'cuda' means the backend's device."""

    def __new__(cls, device="cpu"):
        return REAL_GENERATOR(translate(device))

    @classmethod
    def _delegate_types(cls):
        return (REAL_GENERATOR,)


# --- functions -----------------------------------------------------------------------------
class DeviceContext:
    """torch.cuda.device(i): switch the backend's current device for the block."""

    def __init__(self, device):
        self.idx = index_of(device)
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


def seed_device(seed):
    """Seed only the device generator, as torch.cuda.manual_seed does. (Not backend.device.
    manual_seed: torch.manual_seed itself calls torch.cuda.manual_seed_all, which would loop.)"""
    v = _vendor()
    if v is None:
        torch.default_generator.manual_seed(int(seed))
    else:
        v.manual_seed_all(int(seed))


def get_rng_state(device="cuda"):
    v = _vendor()
    return torch.get_rng_state() if v is None else v.get_rng_state()


def set_rng_state(new_state, device="cuda"):
    v = _vendor()
    return torch.set_rng_state(new_state) if v is None else v.set_rng_state(new_state)


def _host_memory() -> tuple[int, int]:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        return int(free), int(total)
    except (ValueError, OSError, AttributeError):
        return 0, 0


def mem_get_info(device=None):
    v = _vendor()
    if v is not None and hasattr(v, "mem_get_info"):
        return v.mem_get_info()
    return _host_memory()


def get_device_properties(device=None):
    """An object with the fields upstream code reads (name, total_memory, major/minor,
    multi_processor_count). major/minor say 8.0 as get_device_capability does."""
    v = _vendor()
    if v is not None and hasattr(v, "get_device_properties"):
        real = v.get_device_properties(index_of(device) or 0)
        total = getattr(real, "total_memory", 0)
        name = getattr(real, "name", _dev().get_device_name(0))
    else:
        total, name = _host_memory()[1], _dev().get_device_name(0)
    return types.SimpleNamespace(name=name, total_memory=total, major=8, minor=0,
                                 multi_processor_count=os.cpu_count() or 1, is_integrated=False,
                                 is_multi_gpu_board=False, L2_cache_size=0,
                                 gcnArchName="phyx", uuid="phyx-shim")


def lazy_init_refusal():
    """Stands in for torch.cuda._lazy_init: names the torch.cuda call that needs real CUDA."""
    caller = sys._getframe(1).f_code.co_name
    raise NotServedError(
        f"phyx: torch.cuda.{caller}() needs a CUDA runtime and is not served by the phyx_patches "
        f"torch_cuda shim on backend {backend().name!r}; use phyx.device.* instead or skip it "
        f"when phyx.device.device_type() != 'cuda' (see `phyx port rules`)")


def _noop(*args, **kwargs):
    return None


NVTX = {"range_push": lambda msg: 0, "range_pop": lambda: 0, "range_start": lambda msg: 0,
        "range_end": _noop, "mark": _noop,
        "range": lambda msg, *a, **k: contextlib.nullcontext()}


CUDA_FUNCS = {
    "is_available": lambda: True,
    "is_initialized": lambda: True,
    "init": lambda: None,
    "_lazy_init": lazy_init_refusal,
    "device_count": lambda: _dev().device_count(),
    "current_device": lambda: _dev().current_device(),
    "set_device": lambda device: _dev().set_device(index_of(device) or 0),
    "synchronize": lambda device=None: _dev().synchronize(),
    "manual_seed": seed_device,
    "manual_seed_all": seed_device,
    "seed": lambda: None,
    "seed_all": lambda: None,
    "get_rng_state": get_rng_state,
    "set_rng_state": set_rng_state,
    "get_rng_state_all": lambda: [get_rng_state()],
    "set_rng_state_all": lambda states: set_rng_state(states[0]),
    "Event": Event,
    "Stream": Stream,
    "stream": lambda s: _dev().stream(s) if s is not None else contextlib.nullcontext(),
    "current_stream": lambda device=None: _dev().current_stream(),
    "default_stream": lambda device=None: _dev().current_stream(),
    "device": DeviceContext,
    "memory_allocated": _memory("memory_allocated"),
    "max_memory_allocated": _memory("max_memory_allocated"),
    "memory_reserved": _memory("memory_reserved"),
    "max_memory_reserved": _memory("max_memory_reserved"),
    "reset_peak_memory_stats": lambda device=None: _dev().reset_peak_memory_stats(),
    "reset_max_memory_allocated": lambda device=None: _dev().reset_peak_memory_stats(),
    "empty_cache": lambda: _dev().empty_cache(),
    "ipc_collect": _noop,
    "mem_get_info": mem_get_info,
    "get_device_properties": get_device_properties,
    "get_device_name": lambda device=None: _dev().get_device_name(index_of(device) or 0),
    # upstream feature checks ("Ampere or newer?") pick the bf16 / flash path, which the
    # other shims then serve on the active backend
    "get_device_capability": lambda device=None: (8, 0),
    "is_bf16_supported": lambda including_emulation=True: True,
    "is_current_stream_capturing": lambda: False,
}
