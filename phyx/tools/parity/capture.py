"""Capture per-layer (optionally per-op) inputs and outputs of any nn.Module.

    with Capture(model, layers=["blocks.*", "head"], mode="full") as cap:
        out = model(x)
    cap.records  # completion order: a child finishes before its parent

mode 'full' keeps every tensor (CPU copies; needed for replay); mode 'stats' keeps statistics and
a fixed strided sample of each tensor (for large runs). Records are named by module path, with
'#k' for the k-th call of a module called more than once; per-op records are named
'<module>/op:<op>#k' and come from phyx.ops.observe, so they see every phyx.ops kernel call.

Methods and host functions that are not a module's forward can be captured too:
- a layer pattern 'path:method' (e.g. 'layers.*.self_attn:gen') wraps that method of every
  matching module (records named 'layers.0.self_attn:gen', kind 'method');
- functions={'rope_tables': 'phyx.ops.rope_tables:to_cos_sin'} wraps a module-level function for
  the duration of the capture (records named by the label, kind 'fn'). Use it for host-side
  builders (RoPE tables, time embeddings) that a model calls inline: a table built wrongly is
  then located at the builder, not at the first block that consumes it. Function probes see only
  calls made through the module attribute (`rope_tables.to_cos_sin(...)`), not `from .. import`ed
  names; their tensor inputs stay on the host at replay.

SP / TP: pass `merge(layer, key, tensor) -> tensor` to turn a rank's shard into the full tensor
(it runs on every rank in the same order, so it may use collectives such as phyx.parallel's
sp_gather or phyx.comm.all_gather); see phyx.tools.parity.parallel for the TP / SP merges. Parallel
captures are compared with single-device ones layer by layer without replay.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

SAMPLE = 256


class NotReplayable(RuntimeError):
    pass


# --- (un)packing call arguments into JSON + a tensor table -------------------------------------
def pack(obj: Any, tensors: dict, key: str) -> Any:
    """JSON-able structure with tensors replaced by {'t': name}; tensors go into `tensors`."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj
        return {"t": key}
    if isinstance(obj, (list, tuple)):
        return {"seq": [pack(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}
    if isinstance(obj, dict):
        return {"map": {str(k): pack(v, tensors, f"{key}.{k}") for k, v in obj.items()}}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"v": obj}
    if isinstance(obj, torch.dtype):
        return {"dtype": str(obj).replace("torch.", "")}
    if isinstance(obj, torch.device):
        return {"device": str(obj)}
    return {"opaque": repr(obj)[:200]}


def unpack(struct: Any, tensors: dict, convert: Callable | None = None, device=None,
           float_dtype: torch.dtype | None = None) -> Any:
    """Rebuild a packed structure. `device`: replaces recorded device arguments (a replay runs on
    this backend's device); `float_dtype`: replaces recorded floating dtype arguments (the float64
    oracle replay)."""
    if "t" in struct:
        t = tensors[struct["t"]]
        return convert(t) if convert else t
    if "seq" in struct:
        vals = [unpack(v, tensors, convert, device, float_dtype) for v in struct["seq"]]
        return tuple(vals) if struct.get("tuple") else vals
    if "map" in struct:
        return {k: unpack(v, tensors, convert, device, float_dtype) for k, v in struct["map"].items()}
    if "v" in struct:
        return struct["v"]
    if "dtype" in struct:
        dt = getattr(torch, str(struct["dtype"]), None)
        if not isinstance(dt, torch.dtype):   # recorded data names a dtype, nothing else
            raise NotReplayable(f"{str(struct['dtype'])[:40]!r} is not a torch dtype")
        return float_dtype if float_dtype is not None and dt.is_floating_point else dt
    if "device" in struct:
        return torch.device(device if device is not None else struct["device"])
    raise NotReplayable(f"argument {struct.get('opaque')} cannot be rebuilt for replay")


def flatten_outputs(obj: Any, key: str = "out") -> list[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        return [(key, obj)]
    if isinstance(obj, (list, tuple)):
        return [kv for i, v in enumerate(obj) for kv in flatten_outputs(v, f"{key}.{i}")]
    if isinstance(obj, dict):
        return [kv for k, v in obj.items() for kv in flatten_outputs(v, f"{key}.{k}")]
    return []


def tensor_stats(t: torch.Tensor, sample: int = SAMPLE) -> dict:
    """Statistics plus a strided sample (same indices on every backend, so samples compare)."""
    x = t.detach().to("cpu", torch.float64).flatten()
    n = x.numel()
    fin = x[torch.isfinite(x)]
    idx = torch.linspace(0, max(n - 1, 0), min(sample, n)).round().long() if n else torch.zeros(0, dtype=torch.long)
    return {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""), "numel": n,
            "mean": float(fin.mean()) if fin.numel() else float("nan"),
            "std": float(fin.std()) if fin.numel() > 1 else 0.0,
            "min": float(fin.min()) if fin.numel() else float("nan"),
            "max": float(fin.max()) if fin.numel() else float("nan"),
            "l2": float(fin.norm()) if fin.numel() else 0.0,
            "nan": int(torch.isnan(x).sum()), "inf": int(torch.isinf(x).sum()),
            "sample": x[idx].tolist()}


# --- records --------------------------------------------------------------------------------
@dataclass
class Record:
    idx: int
    name: str              # unique: module path (or path/op:name) plus '#k' for repeated calls
    target: str            # module path, or 'op:<name>' for per-op records
    kind: str              # 'module' | 'op'
    inputs: Any = None     # packed structure (JSON) with tensor keys, full mode only
    outputs: list = field(default_factory=list)          # output keys, in order
    tensors: dict = field(default_factory=dict)          # key -> CPU tensor (full mode)
    stats: dict = field(default_factory=dict)            # key -> stats (both modes)


def _pattern(p: str) -> "re.Pattern":
    """Dotted-path glob: '*' matches one path component, '**' any number."""
    parts = [re.escape(x) for x in p.split("**")]
    return re.compile("^" + ".*".join(x.replace(r"\*", "[^.]*") for x in parts) + "$")


def _match(name: str, patterns) -> bool:
    return any(_pattern(p).match(name) for p in patterns)


def _is_container(m: nn.Module) -> bool:
    return isinstance(m, (nn.ModuleList, nn.ModuleDict))


class Capture:
    def __init__(self, model: nn.Module, layers=None, mode: str = "full", per_op: bool = False,
                 merge: Callable | None = None, enabled: bool = True,
                 functions: dict[str, str] | None = None):
        if mode not in ("full", "stats"):
            raise ValueError(f"capture mode must be 'full' or 'stats', got {mode!r}")
        self.model, self.mode, self.per_op, self.merge = model, mode, per_op, merge
        self.enabled = enabled
        self.methods: dict[str, tuple[nn.Module, str]] = {}
        if layers is None:
            self.selected = {n: m for n, m in model.named_modules() if n and not _is_container(m)}
        elif callable(layers):
            self.selected = {n: m for n, m in model.named_modules() if n and layers(n, m)}
        else:
            mods = [p for p in layers if ":" not in p]
            meths = [p.split(":", 1) for p in layers if ":" in p]
            self.selected = {n: m for n, m in model.named_modules() if n and _match(n, mods)}
            for path, meth in meths:
                for n, m in model.named_modules():
                    if (_match(n, [path]) if path else n == "") and callable(getattr(m, meth, None)):
                        self.methods[f"{n}:{meth}"] = (m, meth)
            if not self.selected and not self.methods:
                raise ValueError(f"no module matches {list(layers)}; modules are "
                                 f"{[n for n, _ in model.named_modules() if n][:30]}")
        self.functions = dict(functions or {})
        self._fn_orig: dict = {}
        self.records: list[Record] = []
        self._handles: list = []
        self._stack: list[tuple[str, Any]] = []
        self._calls: dict[str, int] = {}
        self._observing = None

    # -- lifecycle --
    def __enter__(self):
        for name, mod in self.selected.items():
            self._handles.append(mod.register_forward_pre_hook(self._pre(name), with_kwargs=True))
            self._handles.append(mod.register_forward_hook(self._post(name), with_kwargs=True))
        for name, (mod, meth) in self.methods.items():
            setattr(mod, meth, self._wrap_call(name, name, "method", getattr(mod, meth)))
        for label, where in self.functions.items():
            owner, attr = _resolve_function(where)
            orig = getattr(owner, attr)
            self._fn_orig[label] = (owner, attr, orig)
            setattr(owner, attr, self._wrap_call(label, f"fn:{where}", "fn", orig))
        if self.per_op:
            self._wrap_ops()
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for mod, meth in self.methods.values():
            if meth in mod.__dict__:
                delattr(mod, meth)  # the instance attribute shadowed the class's method
        for owner, attr, orig in self._fn_orig.values():
            setattr(owner, attr, orig)
        self._fn_orig.clear()
        self._unwrap_ops()
        return False

    def _wrap_call(self, base: str, target: str, kind: str, orig: Callable) -> Callable:
        """A method or function probe: records inputs and outputs like a module hook."""
        def wrapped(*args, **kwargs):
            if not self.enabled:
                return orig(*args, **kwargs)
            rec = Record(-1, self._unique(base), target, kind)
            self._pack_inputs(rec, base, args, kwargs)
            self._stack.append((base, rec))
            try:
                out = orig(*args, **kwargs)
            finally:
                self._stack.pop()
            self._finish(rec, base, out)
            return out
        wrapped.__wrapped__ = orig
        return wrapped

    # -- helpers --
    def _unique(self, base: str) -> str:
        k = self._calls.get(base, 0)
        self._calls[base] = k + 1
        return base if k == 0 else f"{base}#{k}"

    def _store(self, rec: Record, layer: str, key: str, t: torch.Tensor) -> None:
        if self.merge is not None:
            t = self.merge(layer, key, t)
            if t is None:
                return
        if self.mode == "full":
            rec.tensors[key] = t.detach().to("cpu", copy=True).contiguous()
        rec.stats[key] = tensor_stats(t)

    def _pack_inputs(self, rec: Record, layer: str, args, kwargs) -> None:
        found: dict = {}
        rec.inputs = {"args": pack(tuple(args), found, "in.arg"),
                      "kwargs": pack(dict(kwargs), found, "in.kw")}
        for k, t in found.items():
            self._store(rec, layer, k, t)

    def _finish(self, rec: Record, layer: str, output) -> None:
        for k, t in flatten_outputs(output):
            rec.outputs.append(k)
            self._store(rec, layer, k, t)
        rec.idx = len(self.records)
        self.records.append(rec)

    # -- module hooks --
    def _pre(self, name):
        def hook(mod, args, kwargs):
            if not self.enabled:
                return None
            rec = Record(-1, self._unique(name), name, "module")
            self._pack_inputs(rec, name, args, kwargs)
            self._stack.append((name, rec))
            return None
        return hook

    def _post(self, name):
        def hook(mod, args, kwargs, output):
            if not self.enabled or not self._stack:
                return None
            _, rec = self._stack.pop()
            self._finish(rec, name, output)
            return None
        return hook

    # -- per-op records through phyx.ops.observe --
    def _on_op(self, op, kernel_name, args, out):
        if not self.enabled:
            return
        parent = self._stack[-1][0] if self._stack else "<root>"
        layer = f"{parent}/op:{op}"
        rec = Record(-1, self._unique(layer), f"op:{op}", "op")
        self._pack_inputs(rec, layer, args, {})
        self._finish(rec, layer, out)

    def _wrap_ops(self):
        from phyx.ops import observe

        self._observing = observe(self._on_op)
        self._observing.__enter__()

    def _unwrap_ops(self):
        if self._observing is not None:
            self._observing.__exit__(None, None, None)
            self._observing = None


def _resolve_function(where: str):
    """'package.module:attr' -> (module object, attr)."""
    import importlib

    mod, sep, attr = where.partition(":")
    if not sep or not attr:
        raise ValueError(f"function probe {where!r} must be 'package.module:function'")
    owner = importlib.import_module(mod)
    if not callable(getattr(owner, attr, None)):
        raise ValueError(f"function probe {where!r}: {mod} has no function {attr!r}")
    return owner, attr


def call_recorded(model: nn.Module, layer: dict, args, kwargs, functions=(), methods=()):
    """Call what a record captured (module, method or function) again with the given inputs.

    A record read from an artifact is data: a method is called only when it matches one of the
    'path:method' capture patterns in `methods` and a function only when it is one of the
    'module:function' probes in `functions` (both declared by this side's ModelSpec)."""
    kind, target = layer["kind"], layer["target"]
    if kind == "module":
        return model.get_submodule(target)(*args, **kwargs)
    if kind == "method":
        path, _, meth = target.rpartition(":")
        declared = any(meth == pm.split(":", 1)[1] and (_match(path, [pm.split(":", 1)[0]])
                                                        if pm.split(":", 1)[0] else path == "")
                       for pm in methods)
        if not declared or meth.startswith("_"):
            raise NotReplayable(f"method {target[:80]!r} is not a capture pattern of this model; "
                                f"not called")
        return getattr(model.get_submodule(path) if path else model, meth)(*args, **kwargs)
    if kind == "fn":
        where = target[3:] if target.startswith("fn:") else None
        if where is None or where not in set(functions):
            raise NotReplayable(f"function {target[:80]!r} is not a probe this model declares; "
                                f"not imported or called")
        owner, attr = _resolve_function(where)
        return getattr(owner, attr)(*args, **kwargs)
    raise NotReplayable(f"record kind {kind!r} cannot be called")
