"""`phyx port run`: run a user's module under the phyx_patches shims on a backend and prove
what happened: which ops went through the backend's kernels and which ran as plain torch, the
traps hit at run time, and per-layer parity against a float64 run (the parity suite's replay).

A target is a driver file (or module) defining
    build() -> nn.Module            called inside the shim scope: import upstream code in here
    inputs(seed) -> dict | tuple    CPU tensors (kwargs or positional args of forward)
    forward(model, inputs)          optional; default model(**inputs) / model(*inputs)
    LAYERS                          optional capture patterns (default: top-level modules and
                                    the entries of top-level ModuleLists)
or 'package.module:factory' (factory() -> nn.Module) with `inputs` given separately."""
from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from phyx.errors import PhyxError

# libraries phyx_patches does not serve, and what to do about each (first import name)
UNSHIMMED = {
    "xfuser": "xDiT's parallel runtime: run single-device (skip its parallel setup) or use "
              "phyx.parallel",
    "yunchang": "USP ring/Ulysses attention: run single-device or use phyx.parallel",
    "q8_kernels": "FP8/INT8 CUDA kernels: run the unquantised path",
    "triton": "Triton kernels: use the plain-torch path or a phyx op",
    "sageattention": "SageAttention: take the flash-attn / SDPA path",
    "torchao": "torchao quantisation (FP8 dtypes): run the unquantised path",
    "deepspeed": "DeepSpeed: build the model without it",
    "bitsandbytes": "bitsandbytes quantisation: run the unquantised path",
    "natten": "neighbourhood attention: phyx.ops.attention with a neighbourhood bool mask",
}


class PortRunError(PhyxError):
    """A port run that cannot start: the message is one line naming the fix."""


@dataclass
class Target:
    name: str
    build: Callable
    inputs: Callable
    forward: Callable | None = None
    layers: tuple | None = None


def _import_error(what: str, e: BaseException) -> PortRunError:
    missing = getattr(e, "name", None) or ""
    top = missing.split(".")[0]
    if top in UNSHIMMED:
        return PortRunError(f"{what} imports {missing!r}, which phyx_patches does not serve "
                            f"({UNSHIMMED[top]}); import only the files the model needs "
                            f"(docs/porting.md) or replace the call")
    if isinstance(e, ModuleNotFoundError) and missing:
        return PortRunError(f"cannot import {what}: no module named {missing!r}; pip install it, "
                            f"add its checkout with --path, or import only the files the model "
                            f"needs (docs/porting.md)")
    msg = str(e).splitlines()[0] if str(e) else ""
    return PortRunError(f"cannot import {what}: {type(e).__name__}: {msg}")


def _load_module(spec: str):
    p = Path(spec)
    if p.suffix == ".py":
        if not p.is_file():
            raise PortRunError(f"driver {spec} does not exist; give a .py file or "
                               f"'package.module:factory'")
        name = f"_phyx_port_driver_{p.stem}"
        s = importlib.util.spec_from_file_location(name, p)
        mod = importlib.util.module_from_spec(s)
        sys.modules[name] = mod
        try:
            s.loader.exec_module(mod)
        except Exception as e:
            sys.modules.pop(name, None)
            raise _import_error(f"driver {spec}", e) from e
        return mod
    try:
        return importlib.import_module(spec)
    except Exception as e:
        raise _import_error(f"module {spec!r}", e) from e


def load_target(spec: str, inputs: str | None = None, paths=()) -> Target:
    """Load a driver (file or module) or 'module:factory' (+ inputs 'module:fn'). Call inside
    the shim scope, so upstream imports see the shims."""
    for p in paths:
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    mod_spec, _, attr = spec.partition(":") if not spec.endswith(".py") else (spec, "", "")
    mod = _load_module(mod_spec)
    if attr:
        build = getattr(mod, attr, None)
        if not callable(build):
            raise PortRunError(f"{mod_spec} has no callable {attr!r}")
        if inputs is None and not callable(getattr(mod, "inputs", None)):
            raise PortRunError(f"give the inputs of {spec} with --inputs 'module:function' "
                               f"(function(seed) -> dict or tuple of CPU tensors)")
        inp = getattr(mod, "inputs", None)
        if inputs is not None:
            im, _, ia = inputs.partition(":")
            inp = getattr(_load_module(im), ia, None)
            if not callable(inp):
                raise PortRunError(f"--inputs {inputs!r}: no such function")
        return Target(spec, build, inp, getattr(mod, "forward", None), getattr(mod, "LAYERS", None))
    missing = [n for n in ("build", "inputs") if not callable(getattr(mod, n, None))]
    if missing:
        raise PortRunError(f"driver {spec} must define {' and '.join(missing)}() (see `phyx port "
                           f"run --help`)")
    return Target(spec, mod.build, mod.inputs, getattr(mod, "forward", None),
                  getattr(mod, "LAYERS", None))


def default_layers(model: torch.nn.Module) -> tuple:
    out = []
    for name, child in model.named_children():
        if isinstance(child, (torch.nn.ModuleList, torch.nn.ModuleDict)):
            out += [f"{name}.{n}" for n, _ in child.named_children()]
        else:
            out.append(name)
    return tuple(out)


def _cast(obj, device, dtype):
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point():
            return obj.to(device=device, dtype=dtype)
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _cast(v, device, dtype) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cast(v, device, dtype) for v in obj)
    return obj


def _call(target: Target, model, inputs):
    if target.forward is not None:
        return target.forward(model, inputs)
    if isinstance(inputs, dict):
        return model(**inputs)
    return model(*inputs) if isinstance(inputs, (list, tuple)) else model(inputs)


def _first_tensor(out):
    from torch.utils._pytree import tree_flatten

    ts = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.is_floating_point()]
    return ts[0] if ts else None


@dataclass
class PortRun:
    target: str
    backend: str
    emulated: bool
    policy: str
    dtype: str
    autocast: str | None
    shims: tuple
    modules: dict                      # path -> ModuleOps.to_dict(), rolled up to depth
    total: dict
    phyx_calls: dict                   # phyx op -> calls
    kernels: dict                      # phyx op -> kernel name
    traps: list = field(default_factory=list)
    layers: list = field(default_factory=list)   # per-layer parity rows
    output: dict | None = None         # final output vs float64
    replay_errors: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    parity_error: str | None = None

    @property
    def routed_nothing(self) -> bool:
        return not self.phyx_calls

    @property
    def failed(self) -> bool:
        return (self.output is not None and not self.output["ok"]) or \
            any(not r["ok"] for r in self.layers)


def run_port(target: Target | str, backend: str = "npu-emulated", *, policy: str = "fast",
             dtype: str = "fp32", autocast: str | None = None, seed: int = 0, depth: int = 2,
             parity: bool = True, inputs: str | None = None, paths=(),
             sdpa: bool = False) -> PortRun:
    """Run `target` under all shims on `backend`; account ops and traps; compare per layer and
    the output with a float64 run on the CPU reference. The shim scope is left afterwards."""
    import phyx
    import phyx_patches
    from phyx.ops import chosen_kernel
    from phyx.tools.parity.backends import using_backend
    from phyx.tools.parity.capture import Capture
    from phyx.tools.parity.compare import DTYPES
    from phyx.tools.porting.accounting import OpAccounting

    dt = DTYPES[dtype]
    import torch._dynamo

    # torch.compile'd upstream functions run eagerly: compilation changes numerics and the
    # accounting must see every op
    with torch._dynamo.config.patch(disable=True), using_backend(backend, policy) as b:
        b.set_reduced_precision_matmul(False)
        shims = phyx_patches.DEFAULT + (("sdpa",) if sdpa else ())
        with phyx_patches.scope(shims):
            tgt = target if isinstance(target, Target) else load_target(target, inputs, paths)
            try:
                model = tgt.build()
            except ImportError as e:
                raise _import_error(f"{tgt.name} (build)", e) from e
            if not isinstance(model, torch.nn.Module):
                raise PortRunError(f"{tgt.name}: build() returned {type(model).__name__}, not a "
                                   f"torch.nn.Module")
            model.eval()
            host_inputs = tgt.inputs(seed)
            model64 = copy.deepcopy(model) if parity else None
            dev = b.torch_device(0) if b.device_type != "cpu" else torch.device("cpu")
            model.to(device=dev, dtype=dt)
            acct = OpAccounting(model, b.device_type)
            layers = tgt.layers or default_layers(model)
            cap = Capture(model, layers=layers, mode="full") if layers else None

            def autocast_ctx():
                return (torch.autocast(b.device_type, dtype=DTYPES[autocast]) if autocast
                        else contextlib.nullcontext())
            # two passes, so the capture's own bookkeeping is not counted as the model's ops
            with torch.no_grad(), acct, autocast_ctx():
                out = _call(tgt, model, _cast(host_inputs, dev, dt))
            if parity and cap is not None:
                with torch.no_grad(), cap, autocast_ctx():
                    _call(tgt, model, _cast(host_inputs, dev, dt))
            kernels = {op: chosen_kernel(op).name for op in acct.phyx_calls}
            res = PortRun(tgt.name, b.name, bool(b.emulated), policy, dtype,
                          autocast, shims, {k: v.to_dict() for k, v in acct.rollup(depth).items()},
                          acct.total().to_dict(), dict(acct.phyx_calls), kernels,
                          [t.to_dict() for t in acct.traps.values()])
            if parity:
                _parity(res, tgt, cap, model64, host_inputs, out, b, dt, autocast)
    if res.routed_nothing:
        res.notes.append(f"no call went through a phyx op: {b.name} ran only plain torch, so this "
                         f"run proves nothing about {b.name}'s kernels (the shims serve "
                         f"flash_attn / apex / transformer_engine / torch.cuda calls; plain SDPA "
                         f"goes through phyx only with --sdpa, norms and GELU stay torch's)")
    phyx.get_backend()
    return res


def _parity(res: PortRun, tgt, cap, model64, host_inputs, out, b, dt, autocast) -> None:
    from phyx.tools.parity import artifact as A
    from phyx.tools.parity import metrics as M
    from phyx.tools.parity.backends import using_backend
    from phyx.tools.parity.compare import replay

    judged = torch.bfloat16 if autocast else dt
    thr = M.threshold_for(judged)
    run = None if cap is None else A.run_from_capture(
        cap, run={"model": tgt.name, "config": {}, "seed": 0, "dtype": "x"}, inputs={},
        outputs={}, backend=b)
    oracle, errors = {}, {}
    with using_backend("cpu", "reference"), torch.no_grad():
        model64 = model64.to(torch.float64)
        try:
            out64 = _call(tgt, model64, _cast(host_inputs, torch.device("cpu"), torch.float64))
        except Exception as e:  # e.g. upstream asserting bf16: say so instead of a traceback
            import traceback

            fr = traceback.extract_tb(e.__traceback__)[-1]
            res.parity_error = (f"the float64 run failed: {type(e).__name__}: {str(e)[:200]} at "
                                f"{fr.filename}:{fr.lineno} ({fr.line})")
            return
        if run is not None:
            oracle, errors = replay(model64, run, torch.device("cpu"), cast=torch.float64)
    res.replay_errors = errors
    for L in (run.layers if run is not None else []):
        name = L["name"]
        if name not in oracle:
            res.layers.append({"layer": name, "rel_l2": None, "ok": False,
                               "reason": f"not replayed in float64: {errors.get(name, '?')}"})
            continue
        worst = 0.0
        for key in L["outputs"]:
            got, ref = run.output(L, key), oracle[name].get(key)
            if got is None or ref is None or not got.is_floating_point():
                continue
            worst = max(worst, M.compare(got, ref).rel_l2)
        res.layers.append({"layer": name, "rel_l2": worst, "limit": thr.rel_l2,
                           "ok": worst <= thr.rel_l2, "reason": ""})
    o, o64 = _first_tensor(out), _first_tensor(out64)
    if o is not None and o64 is not None:
        rel = M.compare(o.detach().float().cpu(), o64).rel_l2
        limit = 1e-5 if judged == torch.float32 else thr.rel_l2
        res.output = {"rel_l2": rel, "limit": limit, "ok": rel < limit,
                      "judged_as": str(judged).replace("torch.", "")}
