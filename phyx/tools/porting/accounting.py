"""What a ported module's forward actually ran: per module, the aten ops that went through a
phyx op (the active backend's kernel) and those that ran as plain torch, their FLOPs, and the
numerical traps hit at run time (float64 / complex compute, random numbers drawn on the device,
torch's native exact GELU, which the NPU computes as tanh).

One TorchDispatchMode sees every aten op; the phyx kernel table is wrapped so ops inside a phyx
op call are attributed to it; global module hooks give the module path."""
from __future__ import annotations

import traceback
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

RNG_OPS = {"randn", "rand", "normal", "uniform", "bernoulli", "randint", "randperm", "multinomial",
           "native_dropout", "exponential", "random", "poisson", "cauchy", "log_normal",
           "geometric", "randn_like", "rand_like", "randint_like", "rrelu_with_noise"}
# SDPA kernels the flop counter has no formula for (CPU / vendor overrideable): 4 B N Sq Skv D
SDPA_OPS = {"_scaled_dot_product_flash_attention_for_cpu",
            "_scaled_dot_product_fused_attention_overrideable", "_scaled_dot_product_attention_math"}
IGNORED_FILES = ("/torch/", "/einops/", "/phyx/", "/phyx_patches/", "/phyx_npu/", "/phyx_cuda/", "contextlib",
                 "<frozen")
TRAP_FIX = {
    "float64-on-device": "build the table on the host in float64 and apply it in float32 "
                         "(phyx.ops.rope_tables); the NPU has no fast float64 kernels",
    "complex-on-device": "use real cos/sin tables with phyx.ops.rope; the NPU has no complex kernels",
    "device-rng": "draw on the CPU with a torch.Generator, then move to the device: the same seed "
                  "gives different numbers on different vendors",
    "native-gelu": "phyx.ops.gelu(x, approximate='none'): the NPU's native gelu ignores "
                   "`approximate` and computes tanh",
}


@dataclass
class ModuleOps:
    backend_calls: int = 0
    plain_calls: int = 0
    backend_flops: float = 0.0
    plain_flops: float = 0.0
    phyx_ops: Counter = field(default_factory=Counter)
    plain_ops: Counter = field(default_factory=Counter)

    def add(self, other: "ModuleOps") -> None:
        self.backend_calls += other.backend_calls
        self.plain_calls += other.plain_calls
        self.backend_flops += other.backend_flops
        self.plain_flops += other.plain_flops
        self.phyx_ops.update(other.phyx_ops)
        self.plain_ops.update(other.plain_ops)

    def to_dict(self) -> dict:
        total = self.backend_flops + self.plain_flops
        return {"backend_calls": self.backend_calls, "plain_calls": self.plain_calls,
                "backend_flops": self.backend_flops, "plain_flops": self.plain_flops,
                "backend_flop_share": (self.backend_flops / total) if total else None,
                "phyx_ops": dict(self.phyx_ops), "top_plain_ops": dict(self.plain_ops.most_common(8))}


@dataclass
class Trap:
    category: str
    where: str                     # the first user-code frame (file:line)
    modules: set = field(default_factory=set)
    ops: Counter = field(default_factory=Counter)
    detail: str = ""

    @property
    def count(self) -> int:
        return sum(self.ops.values())

    def to_dict(self) -> dict:
        return {"category": self.category, "where": self.where, "modules": sorted(self.modules),
                "ops": dict(self.ops), "count": self.count, "detail": self.detail,
                "fix": TRAP_FIX[self.category]}


def _flops(func, args, kwargs, out) -> float:
    packet = func.overloadpacket
    f = flop_registry.get(packet)
    try:
        if f is not None:
            return float(f(*args, **kwargs, out_val=out))
        if packet.__name__ in SDPA_OPS:
            q, k = args[0], args[1]
            b, n, sq, d = q.shape
            return 4.0 * b * n * sq * k.shape[-2] * d
    except Exception:  # a formula that does not fit these arguments: count no FLOPs
        return 0.0
    return 0.0


def _user_frame() -> str:
    for fr in reversed(traceback.extract_stack()[:-3]):
        if not any(s in fr.filename for s in IGNORED_FILES):
            return f"{fr.filename}:{fr.lineno}"
    return "?"


class OpAccounting(TorchDispatchMode):
    """with OpAccounting(model, device_type): model(x)  ->  .modules, .traps, .phyx_calls"""

    def __init__(self, model: torch.nn.Module, device_type: str):
        super().__init__()
        self.names = {id(m): (n or "<root>") for n, m in model.named_modules()}
        self.device_type = device_type
        self.modules: dict[str, ModuleOps] = {}
        self.traps: dict[tuple, Trap] = {}
        self.phyx_calls: Counter = Counter()
        self._stack: list[str] = []
        self._phyx: list[str] = []
        self._handles: list = []

    # -- lifecycle --
    def __enter__(self):
        from torch.nn.modules import module as M

        import phyx.ops
        from phyx.backend import get_backend

        get_backend()
        self._handles = [M.register_module_forward_pre_hook(self._pre),
                         M.register_module_forward_hook(self._post)]
        # phyx ops are seen through the public observer: aten ops run while one is active belong
        # to the backend's kernel, and only the outermost call that returned counts
        self._observing = phyx.ops.observe(self._phyx_done, before=self._phyx_start,
                                           failed=lambda op, name, args: self._phyx.pop())
        self._observing.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._observing.__exit__(None, None, None)
        return super().__exit__(*exc)

    def _phyx_start(self, op, name, args):
        self._phyx.append(op)

    def _phyx_done(self, op, name, args, out):
        self._phyx.pop()
        if not self._phyx:   # the outermost phyx op that returned (a refused call is not counted)
            self.phyx_calls[op] += 1
            mod = self._stack[-1] if self._stack else "<root>"
            self.modules.setdefault(mod, ModuleOps()).phyx_ops[op] += 1

    def _pre(self, mod, args):
        name = self.names.get(id(mod))
        if name is not None:
            self._stack.append(name)

    def _post(self, mod, args, out):
        if self.names.get(id(mod)) is not None and self._stack:
            self._stack.pop()

    # -- every aten op --
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        mod = self._stack[-1] if self._stack else "<root>"
        st = self.modules.setdefault(mod, ModuleOps())
        flops = _flops(func, args, kwargs, out)
        name = func.overloadpacket.__name__
        if self._phyx:
            st.backend_calls += 1
            st.backend_flops += flops
        else:
            st.plain_calls += 1
            st.plain_flops += flops
            st.plain_ops[name] += 1
            self._check_traps(mod, name, args, kwargs, out)
        return out

    def _check_traps(self, mod, name, args, kwargs, out):
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        on_dev = [t for t in outs if t.device.type == self.device_type]
        if any(t.dtype == torch.float64 for t in on_dev):
            self._trap("float64-on-device", mod, name, "float64 result")
        if any(t.is_complex() for t in on_dev):
            self._trap("complex-on-device", mod, name, f"{next(t.dtype for t in on_dev if t.is_complex())} result")
        if name.rstrip("_") in RNG_OPS and on_dev:
            self._trap("device-rng", mod, name, "random numbers drawn on the device")
        if name in ("gelu", "gelu_"):
            approx = kwargs.get("approximate", args[1] if len(args) > 1 else "none")
            if approx != "tanh":
                self._trap("native-gelu", mod, name, f"approximate={approx!r}")

    def _trap(self, category, mod, op, detail):
        where = _user_frame()
        t = self.traps.setdefault((category, where), Trap(category, where, detail=detail))
        t.modules.add(mod)
        t.ops[op] += 1

    # -- results --
    def rollup(self, depth: int) -> dict[str, ModuleOps]:
        """Stats summed over each module path cut to `depth` components ('<root>' for depth 0)."""
        out: dict[str, ModuleOps] = {}
        for name, st in self.modules.items():
            key = name if name == "<root>" else ".".join(name.split(".")[:depth])
            out.setdefault(key, ModuleOps()).add(st)
        return dict(sorted(out.items(), key=lambda kv: (kv[0] != "<root>", kv[0])))

    def total(self) -> ModuleOps:
        t = ModuleOps()
        for st in self.modules.values():
            t.add(st)
        return t
