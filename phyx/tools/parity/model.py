"""Model-level parity: record a run on one backend, replay another's layers, measure the noise
floor, and the one-call API the model and pipeline code uses:

    from phyx.tools.parity.model import run_model_parity, ParitySpec
    spec = ParitySpec("my-dit", build=lambda: build_model(cfg, seed=0), make_inputs=...,
                     forward=lambda model, inputs, device, dtype: ..., config=cfg_dict,
                     layers=["blocks.*", "blocks.*.self_attn", ...])
    result = run_model_parity(spec, backends=["cpu", "npu-emulated"], dtype="fp32")
    print(result.text()); assert not result.failed

A ParitySpec's `build()` returns the model on the CPU with fp32 weights that are the same on every
call (seeded, or loaded from a checkpoint); `make_inputs(seed)` draws every input on the CPU
(noise, sigmas, text embeddings, data order: the same seed gives different torch.randn on
different vendors); `forward(model, inputs, device, dtype)` runs one teacher-forced step.
The real models' specs are thin views of their family adapters (phyx.models.registry; zoo.py);
register_model / 'module:factory' add models that are not a phyx family (the toy tiny-dit).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from phyx.tools.parity import artifact as A
from phyx.tools.parity.backends import using_backend
from phyx.tools.parity.capture import Capture
from phyx.tools.parity.compare import DTYPES, CompareReport, compare_runs, format_compare, replay


@dataclass
class LossSpec:
    """How a model trains for loss parity: make_batch(inputs, step, seed) draws everything random
    on the CPU from (seed, step); loss_fn(model, batch, device, dtype, forward) -> scalar loss."""
    make_batch: Callable
    loss_fn: Callable
    name: str = "loss"


@dataclass
class ParitySpec:
    name: str
    build: Callable[[], torch.nn.Module]
    make_inputs: Callable[[int], dict]
    forward: Callable
    config: dict = field(default_factory=dict)
    layers: tuple | None = None          # capture patterns; None = every non-container module
    seed: int = 0
    functions: dict | None = None        # function probes {label: 'module:function'} (capture.py)
    # prepare(model, device, dtype) -> model on the device in the run dtype (default .to(...));
    # models that keep some parameters in fp32 under bf16 (Wan) pass their own.
    prepare: Callable | None = None
    loss: LossSpec | None = None
    train_inputs: Callable[[int], dict] | None = None   # the fixed training set for loss parity

    def place(self, model: torch.nn.Module, device, dtype: torch.dtype) -> torch.nn.Module:
        if self.prepare is not None:
            return self.prepare(model, device, dtype)
        return model.to(device=device, dtype=dtype)


_REGISTRY: dict[str, Callable[..., ParitySpec]] = {}


def register_model(name: str, factory: Callable[..., ParitySpec]) -> None:
    """Make a model recordable by `phyx parity record --model NAME`. factory(config: dict,
    seed: int) -> ParitySpec."""
    _REGISTRY[name] = factory


def registered_models() -> list[str]:
    _load_zoo()
    return sorted(_REGISTRY)


def _load_zoo() -> None:
    # the real models (Wan, LingBot, Cosmos-Predict2, Cosmos3) register on first use, so
    # `import phyx.tools.parity.model` does not import every model package
    importlib.import_module("phyx.tools.parity.zoo")


def get_model_spec(name: str, config: dict | None = None, seed: int = 0) -> ParitySpec:
    """The spec of registered model `name` (a canonical model name or an alias from
    phyx.models.registry, or a register_model name), or of 'module:factory'. Only for names
    from the command line or Python: a name read from an artifact goes through live_spec, which
    accepts registered models only."""
    if name not in _REGISTRY:
        _load_zoo()
        from phyx.errors import UnknownModelError
        from phyx.models import registry

        try:
            name = registry.canonical(name)
        except UnknownModelError:
            pass
    if name in _REGISTRY:
        return _REGISTRY[name](config or {}, seed)
    if ":" in name:  # 'package.module:factory' for models registered outside phyx.tools.parity
        mod, _, attr = name.partition(":")
        return getattr(importlib.import_module(mod), attr)(config or {}, seed)
    raise ValueError(f"unknown parity model {name!r}; registered: {sorted(_REGISTRY)} (or pass "
                     f"'module:factory')")


def live_spec(source: A.RunData, model: str | None = None) -> ParitySpec:
    """The model to run live against artifact `source`: `model` (given on the command line), else
    the registered model the manifest names, built with its recorded config and seed. A manifest
    naming anything else ('module:factory', an unknown name) is refused: nothing it names is
    imported or called."""
    run = source.manifest["run"]
    name = model if model is not None else run["model"]
    if model is None and name not in _REGISTRY:
        _load_zoo()
        from phyx.errors import UnknownModelError
        from phyx.models import registry

        try:   # a canonical name or alias of the in-tree registry, looked up, never imported
            name = registry.canonical(name)
        except UnknownModelError:
            pass
    if model is None and name not in _REGISTRY:
        raise A.ArtifactError(f"{source.path}: run.model {name[:80]!r} is not a registered parity "
                              f"model; --live builds only registered models, or the one given "
                              f"with --model (never one an artifact names)")
    return _built_from_data(lambda: get_model_spec(name, run.get("config") or {}, run.get("seed", 0)),
                            f"{source.path}: run.config")


def _built_from_data(make: Callable, what: str):
    """Call a registered factory on a config read from disk: a config it cannot use is one
    ArtifactError line, not a traceback."""
    from phyx.errors import PhyxError

    try:
        return make()
    except PhyxError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        raise A.ArtifactError(f"{what} does not describe the model: {type(e).__name__}: "
                              f"{str(e)[:200]}") from None


def check_replay_source(spec: ParitySpec, source: A.RunData) -> None:
    """--replay-from must name a run of the same model, config and seed."""
    from phyx.errors import UnknownModelError
    from phyx.models import registry

    def same_model(theirs, mine) -> bool:   # an alias recorded by an older phyx is the same model
        try:
            return registry.canonical(str(theirs)) == registry.canonical(str(mine))
        except UnknownModelError:
            return theirs == mine

    run = source.manifest["run"]
    for key, mine in (("model", spec.name), ("config", spec.config), ("seed", spec.seed)):
        theirs = run.get(key, 0 if key == "seed" else None)
        if key == "model" and same_model(theirs, mine):
            continue
        if _jsonable(theirs) != _jsonable(mine):
            raise A.NotComparableError(
                f"--replay-from {source.path}: recorded with run.{key} {str(theirs)[:80]!r}, this "
                f"run has {str(mine)[:80]!r}; replay needs an artifact of the same model, config "
                f"and seed")


def _check_recorded_inputs(recorded: dict, local: dict, source: A.RunData) -> None:
    """The inputs an artifact carries must have the names, shapes and dtypes this spec draws."""
    for k, t in recorded.items():
        mine = local.get(k)
        if not isinstance(mine, torch.Tensor) or tuple(mine.shape) != tuple(t.shape) \
                or mine.dtype != t.dtype:
            want = (f"{tuple(mine.shape)} {mine.dtype}" if isinstance(mine, torch.Tensor)
                    else "no such input")
            raise A.NotComparableError(
                f"--replay-from {source.path}: recorded input {k[:60]!r} is {tuple(t.shape)} "
                f"{t.dtype}, this model draws {want}; the artifact does not belong to this model")


def _jsonable(v):
    import json

    return json.loads(json.dumps(v, default=str))


def _tiny_dit_spec(config: dict, seed: int) -> ParitySpec:
    from phyx.tools.parity import tiny_dit as T

    cfg = T.TinyDiTConfig.from_dict(config) if config else T.TinyDiTConfig()
    return ParitySpec("tiny-dit", build=lambda: T.build(cfg, seed),
                     make_inputs=lambda s: T.make_inputs(cfg, s), forward=T.forward,
                     config=cfg.to_dict(), layers=T.CAPTURE_LAYERS, seed=seed)


register_model("tiny-dit", _tiny_dit_spec)


def _dtype(d) -> torch.dtype:
    return d if isinstance(d, torch.dtype) else DTYPES[d]


def _dname(d) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
            torch.float64: "fp64"}[_dtype(d)]


def _device(b):
    """The active backend's current device (this rank's under torchrun), never device 0."""
    from phyx.device import torch_device

    return torch_device()


def record_run(spec: ParitySpec, backend: str | None = None, dtype="fp32", *, policy="fast",
               inputs: dict | None = None, mode: str = "full", per_op: bool = False,
               replay_from: A.RunData | None = None, merge=None,
               reduced_precision: bool = False) -> A.RunData:
    """Run spec on `backend` (None: the active one, as it is) with capture; optionally replay
    another run's layers on this backend (stored as replay outputs for offline first-divergence).

    policy 'fast' (default) runs the vendor kernels, which is what parity must prove; TF32 / HF32
    stay off unless reduced_precision=True (fp32 with them off first on new hardware)."""
    dt = _dtype(dtype)
    if replay_from is not None:
        check_replay_source(spec, replay_from)
    inputs = inputs if inputs is not None else spec.make_inputs(spec.seed)
    if replay_from is not None:
        recorded = {k[len("inputs/"):]: v for k, v in replay_from.tensors.items()
                    if k.startswith("inputs/")}
        _check_recorded_inputs(recorded, inputs, replay_from)
        inputs = recorded or inputs

    def go(b):
        if backend is not None:
            b.set_reduced_precision_matmul(reduced_precision)
        model = spec.place(spec.build(), _device(b), dt).eval()
        if merge is not None and hasattr(merge, "bind"):
            merge.bind(model)  # parallel merges read which tensors are shards from the modules
        with torch.no_grad(), Capture(model, layers=spec.layers, mode=mode, per_op=per_op,
                                      merge=merge, functions=spec.functions) as cap:
            out = spec.forward(model, inputs, _device(b), dt)
        run = A.run_from_capture(
            cap, run={"model": spec.name, "config": spec.config, "seed": spec.seed,
                      "dtype": _dname(dt), "per_op": per_op},
            inputs=inputs, outputs={"out": out} if isinstance(out, torch.Tensor) else dict(out),
            backend=b)
        if replay_from is not None:
            outs, errors = replay(model, replay_from, _device(b), probes=spec)
            A.add_replay(run, outs, replay_from)
            run.manifest["replay_errors"] = errors
        return run

    if backend is None:
        import phyx

        return go(phyx.get_backend())
    with using_backend(backend, policy) as b:
        return go(b)


def oracle_outputs(spec: ParitySpec, source: A.RunData) -> dict:
    """Every recorded layer of `source` replayed in float64 on the CPU (reference kernels)."""
    with using_backend("cpu", "reference"):
        model = spec.build().to(torch.float64).eval()
        outs, _ = replay(model, source, torch.device("cpu"), cast=torch.float64, probes=spec)
    return outs


def measure_noise_floor(spec: ParitySpec, source: A.RunData, backend: str) -> dict:
    """Per-layer rel_l2 between replays of `source` on one backend: twice with the same kernels
    (determinism) and once per alternative kernel of each op (e.g. cpu 'reference' vs
    'torch.sdpa'). Thresholds are then set relative to it (FLOOR_FACTOR x)."""
    import phyx.ops
    from phyx.tools.parity import metrics as M

    floor: dict[str, float] = {}

    def fold(x, y):
        for name, outs in x.items():
            for k, t in outs.items():
                if name in y and k in y[name]:
                    floor[name] = max(floor.get(name, 0.0), M.compare(y[name][k], t).rel_l2)

    dt = _dtype(source.manifest["run"]["dtype"])
    with using_backend(backend, "reference") as b:
        model = spec.place(spec.build(), _device(b), dt).eval()
        base, _ = replay(model, source, _device(b), probes=spec)
        again, _ = replay(model, source, _device(b), probes=spec)
        fold(base, again)
        for op in phyx.ops.OP_NAMES:
            for k in phyx.ops.available_kernels(op)[1:]:
                with phyx.ops.kernel_override(op, k.name):
                    alt, _ = replay(model, source, _device(b), probes=spec)
                fold(base, alt)
    return floor


@dataclass
class ModelParityResult:
    runs: dict                   # backend -> RunData
    reports: list[CompareReport]  # baseline vs each other backend
    noise_floor: dict | None = None

    @property
    def failed(self) -> bool:
        return any(r.failed for r in self.reports)

    def text(self) -> str:
        return "\n\n".join(format_compare(r) for r in self.reports)


def run_model_parity(spec: ParitySpec, backends: list[str] | None = None, dtype="fp32", *,
                     policy: str = "fast", per_op: bool = False, oracle: bool = True,
                     noise_floor: bool = False, mode: str = "full") -> ModelParityResult:
    """Record spec on the first backend, then on each other backend with a replay of the first
    one's layers; compare (per-layer local error, float64 oracle ratio, accumulated drift)."""
    from phyx.tools.parity.backends import resolve_backends

    usable, skipped = resolve_backends(backends)
    if not usable:
        raise ValueError(f"no usable backend among {backends}: {skipped}")
    base = record_run(spec, usable[0], dtype, policy=policy, per_op=per_op, mode=mode)
    runs = {usable[0]: base}
    orc = oracle_outputs(spec, base) if oracle and mode == "full" else None
    floor = measure_noise_floor(spec, base, usable[0]) if noise_floor else None
    reports = []
    for name in usable[1:]:
        run = record_run(spec, name, dtype, policy=policy, per_op=per_op, mode=mode,
                         replay_from=base if mode == "full" else None)
        runs[name] = run
        rep = compare_runs(base, run, oracle=orc, noise_floor=floor)
        rep.notes += [f"skipped {n}: {why}" for n, why in skipped.items()]
        reports.append(rep)
    return ModelParityResult(runs, reports, floor)
