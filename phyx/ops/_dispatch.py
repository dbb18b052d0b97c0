"""The per-process kernel table. Rebuilt when the backend, policy, a pinned kernel or the set of
observers changes, so a call costs one attribute lookup plus the kernel itself (dispatch target
< 2 us); observers add a wrapper only while one is registered."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import torch

from phyx.errors import UnsupportedArgumentError
from phyx.kernels.spec import ATTENTION_FEATURES, OP_NAMES, POLICIES, Kernel, OpSupport  # noqa: F401
from phyx.ops import reference

_ALL_FLOATS = frozenset({torch.float64, torch.float32, torch.float16, torch.bfloat16})

def _composite_norm_modulate(x, shift, scale, eps=1e-6, out_dtype=None):
    # K is the live table defined below; looked up at call time
    y = K.modulate(K.layer_norm(x, None, None, eps), shift, scale)
    return y if out_dtype is None or y.dtype == out_dtype else y.to(out_dtype)


REFERENCE_KERNELS = {
    "attention": Kernel("attention", "reference", reference.attention,
                        OpSupport(_ALL_FLOATS, ATTENTION_FEATURES), "reference",
                        "chunked fp32 softmax(QK^T)V in plain torch"),
    "rms_norm": Kernel("rms_norm", "reference", reference.rms_norm,
                       OpSupport(_ALL_FLOATS, frozenset({"weight"})), "reference"),
    "layer_norm": Kernel("layer_norm", "reference", reference.layer_norm,
                         OpSupport(_ALL_FLOATS, frozenset({"weight", "bias"})), "reference"),
    "rope": Kernel("rope", "reference", reference.rope,
                   OpSupport(_ALL_FLOATS, frozenset({"adjacent", "half"})), "reference"),
    "modulate": Kernel("modulate", "reference", reference.modulate, OpSupport(_ALL_FLOATS), "reference"),
    "gated_residual": Kernel("gated_residual", "reference", reference.gated_residual,
                             OpSupport(_ALL_FLOATS), "reference"),
    # Without a fused kernel, norm_modulate is the backend's own layer_norm then modulate (looked
    # up at call time, so pins and parity wraps apply); under policy 'reference' that is exactly
    # reference.norm_modulate.
    "norm_modulate": Kernel("norm_modulate", "reference", _composite_norm_modulate,
                            OpSupport(_ALL_FLOATS), "reference",
                            "the chosen layer_norm, then the chosen modulate"),
    "gelu": Kernel("gelu", "reference", reference.gelu,
                   OpSupport(_ALL_FLOATS, frozenset({"none", "tanh"})), "reference"),
    "silu": Kernel("silu", "reference", reference.silu, OpSupport(_ALL_FLOATS), "reference"),
    "swiglu": Kernel("swiglu", "reference", reference.swiglu, OpSupport(_ALL_FLOATS), "reference"),
    "relu2": Kernel("relu2", "reference", reference.relu2, OpSupport(_ALL_FLOATS), "reference"),
}


def _bootstrap(op: str):
    """Until a backend is chosen, the first call of any op selects one (env / autodetect)."""
    def first_call(*args):
        from phyx.backend import get_backend

        get_backend()
        return getattr(K, op)(*args)
    return first_call


# The live table: attribute per op -> callable. phyx.ops functions read it on every call.
K = SimpleNamespace(**{name: _bootstrap(name) for name in REFERENCE_KERNELS})
_chosen: dict[str, Kernel] = dict(REFERENCE_KERNELS)
_pinned: dict[str, str] = {}
_observers: list = []   # _Observer records
# Default policy 'fast' (vendor kernels); parity runs switch to 'reference'.
_state = {"policy": "fast", "backend": None}


def _vendor_kernels(backend) -> dict[str, list[Kernel]]:
    table: dict[str, list[Kernel]] = {}
    for k in backend.kernels():
        if k.op not in OP_NAMES:
            raise ValueError(f"backend {backend.name!r} registers a kernel for unknown op {k.op!r}")
        table.setdefault(k.op, []).append(k)
    return table


def rebuild(backend, policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"unknown kernel policy {policy!r}; choose one of {POLICIES}")
    vendor = _vendor_kernels(backend) if backend is not None else {}
    table = {}
    for op in OP_NAMES:   # every choice first: a pin this backend lacks leaves the table as it was
        choice = REFERENCE_KERNELS[op]
        if op in _pinned:
            choice = _find(op, _pinned[op], vendor)
        elif policy == "fast" and vendor.get(op):
            choice = vendor[op][0]
        table[op] = choice
    for op, choice in table.items():
        _chosen[op] = choice
        setattr(K, op, _observed(op, choice) if _observers else choice.fn)
    _state["policy"] = policy
    _state["backend"] = backend


def unbind(policy: str, pins: dict[str, str] | None = None) -> None:
    """No backend chosen yet: the table selects one (env / autodetect) on the first op call.
    pins: the kernel pins to keep (None: keep the current ones)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown kernel policy {policy!r}; choose one of {POLICIES}")
    if pins is not None:
        _pinned.clear()
        _pinned.update(pins)
    _chosen.update(REFERENCE_KERNELS)
    for op in OP_NAMES:
        setattr(K, op, _bootstrap(op))
    _state["policy"] = policy
    _state["backend"] = None


def _observed(op: str, kernel: Kernel) -> Callable:
    fn, name = kernel.fn, kernel.name

    def call(*args):
        obs = tuple(_observers)
        for o in obs:
            if o.before is not None:
                o.before(op, name, args)
        try:
            out = fn(*args)
        except BaseException:
            for o in obs:
                if o.failed is not None:
                    o.failed(op, name, args)
            raise
        for o in obs:
            if o.after is not None:
                o.after(op, name, args, out)
        return out
    call.__wrapped__ = fn
    return call


def _ensure_backend() -> None:
    if _state["backend"] is None:
        from phyx.backend import get_backend  # noqa: PLC0415 - the table imports no backend at load

        get_backend()  # selects a backend (env / autodetect), which rebuilds the table


def _refresh() -> None:
    _ensure_backend()
    rebuild(_state["backend"], _state["policy"])


@dataclass(frozen=True, eq=False)
class _Observer:
    after: Callable | None
    before: Callable | None
    failed: Callable | None


@contextlib.contextmanager
def observe(callback: Callable | None = None, *, before: Callable | None = None,
            failed: Callable | None = None) -> None:
    """Call callback(op, kernel_name, args, out) after every phyx.ops kernel call in the block
    (args: the kernel's positional arguments); before(op, kernel_name, args) as it starts, and
    failed(op, kernel_name, args) when it raises (a refused call). Survives backend and policy
    switches inside it."""
    obs = _Observer(callback, before, failed)
    _observers.append(obs)
    try:
        _refresh()
        yield
    finally:
        _observers.remove(obs)
        if _state["backend"] is not None:
            rebuild(_state["backend"], _state["policy"])


@contextlib.contextmanager
def kernel_override(op: str, name: str | None):
    """Pin op to kernel `name` (None: unpinned) for the block, then restore the previous pin."""
    prev = pinned(op)
    use_kernel(op, name)
    try:
        yield chosen_kernel(op)
    finally:
        use_kernel(op, prev)


def pinned(op: str) -> str | None:
    """The kernel name op is pinned to, or None."""
    return _pinned.get(op)


def pins() -> dict[str, str]:
    """Every pin in force: op -> kernel name."""
    return dict(_pinned)


def call_kernel(op: str, *args):
    """Call op's chosen kernel with the kernel's positional arguments (what observe() reports):
    replays a recorded op call without phyx.ops' argument validation."""
    if op not in OP_NAMES:
        raise ValueError(f"unknown op {op!r}; ops are {OP_NAMES}")
    return getattr(K, op)(*args)


def _find(op: str, name: str, vendor: dict[str, list[Kernel]]) -> Kernel:
    candidates = [REFERENCE_KERNELS[op]] + vendor.get(op, [])
    for k in candidates:
        if k.name == name:
            return k
    raise UnsupportedArgumentError(
        f"no kernel {name!r} for op {op!r} on this backend; available: {[k.name for k in candidates]}")


def available_kernels(op: str) -> list[Kernel]:
    backend = _state["backend"]
    vendor = _vendor_kernels(backend) if backend is not None else {}
    return [REFERENCE_KERNELS[op]] + vendor.get(op, [])


def use_kernel(op: str, name: str | None) -> None:
    """Pin op to the kernel called `name` (None unpins). Raises if it does not exist here."""
    if op not in OP_NAMES:
        raise ValueError(f"unknown op {op!r}; ops are {OP_NAMES}")
    _ensure_backend()
    if name is None:
        _pinned.pop(op, None)
    else:
        _find(op, name, _vendor_kernels(_state["backend"]))
        _pinned[op] = name
    rebuild(_state["backend"], _state["policy"])


def chosen_kernels() -> dict[str, str]:
    return {op: k.name for op, k in _chosen.items()}


def chosen_kernel(op: str) -> Kernel:
    return _chosen[op]


def get_policy() -> str:
    return _state["policy"]
