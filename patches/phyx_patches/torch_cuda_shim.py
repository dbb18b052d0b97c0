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
import torch.nn.attention

from phyx_patches._cuda_api import CUDA_FUNCS, NVTX, Generator
from phyx_patches._cuda_api import index_of as _index_of
from phyx_patches._device import backend, target, translate, translate_type

NEW_METHODS = ("new_zeros", "new_ones", "new_empty", "new_full", "new_tensor", "new_empty_strided")
FACTORIES = ("zeros", "ones", "empty", "full", "arange", "linspace", "logspace", "eye", "tensor",
             "as_tensor", "randn", "rand", "randint", "randperm", "zeros_like", "ones_like",
             "empty_like", "full_like", "randn_like", "rand_like", "randint_like", "normal",
             "empty_strided", "scalar_tensor", "tril_indices", "triu_indices", "hann_window",
             "hamming_window", "blackman_window", "bartlett_window", "kaiser_window")


def _tensor_cuda(self, device=None, non_blocking=False, memory_format=torch.preserve_format):
    return self.to(target(_index_of(device)), non_blocking=non_blocking, memory_format=memory_format)


def _is_cuda(self):
    """'cuda' is the backend's device under this shim, so tensors there say is_cuda, as
    torch.cuda.is_available() says True."""
    return self.device.type == backend().device_type


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
    def factory(*args, **kwargs):  # also the tensor.new_* methods: self is args[0]
        if "device" in kwargs:
            kwargs["device"] = translate(kwargs["device"])
        return orig(*args, **kwargs)
    return factory


class _Autocast(torch.autocast):
    """torch.autocast that reads device_type 'cuda' as the backend's device type."""

    def __init__(self, device_type, *args, **kwargs):
        super().__init__(translate_type(device_type), *args, **kwargs)


_REAL_SDPA_KERNEL = torch.nn.attention.sdpa_kernel
_REAL_SDP_KERNEL = torch.backends.cuda.sdp_kernel


@contextlib.contextmanager
def _sdpa_kernel(backends, set_priority=False):
    """torch.nn.attention.sdpa_kernel: the CUDA-only choices (EFFICIENT_ATTENTION, CUDNN) leave
    no SDPA kernel on another device; the backend's own (flash / math) stay allowed, after them."""
    from torch.nn.attention import SDPBackend

    chosen = list(backends) if isinstance(backends, (list, tuple)) else [backends]
    for extra in (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH):
        if extra not in chosen:
            chosen.append(extra)
    with _REAL_SDPA_KERNEL(chosen, set_priority):
        yield


@contextlib.contextmanager
def _sdp_kernel(enable_flash=True, enable_math=True, enable_mem_efficient=True, enable_cudnn=True):
    """torch.backends.cuda.sdp_kernel (deprecated form): math stays on off CUDA."""
    with _REAL_SDP_KERNEL(enable_flash=enable_flash, enable_math=True,
                          enable_mem_efficient=enable_mem_efficient, enable_cudnn=enable_cudnn):
        yield


class _AmpAutocast(torch.autocast):
    """torch.cuda.amp.autocast on the backend's device (a class, as the original)."""

    def __init__(self, enabled=True, dtype=torch.float16, cache_enabled=True):
        super().__init__(backend().device_type, dtype=dtype, enabled=enabled,
                         cache_enabled=cache_enabled)


class _GradScaler(torch.amp.GradScaler):
    """torch.cuda.amp.GradScaler on the backend's device."""

    def __init__(self, *args, **kwargs):
        super().__init__(backend().device_type, *args, **kwargs)


def install(layer) -> bool:
    if backend().device_type == "cuda":
        return False
    for name, fn in CUDA_FUNCS.items():
        layer.set_attr(torch.cuda, name, fn)
    layer.set_attr(torch.cuda.amp, "autocast", _AmpAutocast)
    layer.set_attr(torch.cuda.amp, "GradScaler", _GradScaler)
    for name, fn in NVTX.items():
        layer.set_attr(torch.cuda.nvtx, name, fn)
    layer.set_attr(torch, "Generator", Generator)
    layer.set_attr(torch.nn.attention, "sdpa_kernel", _sdpa_kernel)
    layer.set_attr(torch.backends.cuda, "sdp_kernel", _sdp_kernel)
    layer.set_attr(torch.Tensor, "cuda", _tensor_cuda)
    layer.set_attr(torch.Tensor, "is_cuda", property(_is_cuda))
    for name in NEW_METHODS:
        layer.set_attr(torch.Tensor, name, _wrap_factory(getattr(torch.Tensor, name)))
    layer.set_attr(torch.nn.Module, "cuda", _module_cuda)
    layer.set_attr(torch.Tensor, "to", _wrap_to(torch.Tensor.to))
    layer.set_attr(torch.nn.Module, "to", _wrap_to(torch.nn.Module.to))
    for name in FACTORIES:
        layer.set_attr(torch, name, _wrap_factory(getattr(torch, name)))
    layer.set_attr(torch, "autocast", _Autocast)
    layer.set_attr(torch.amp, "autocast", _Autocast)
    return True
