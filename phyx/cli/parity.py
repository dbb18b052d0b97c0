"""`phyx parity ops | record | compare | loss`.

Exit codes: 0 the verdict passed, 1 it failed (or nothing passed), 2 usage or environment
error. `--json` prints the report as JSON on stdout (the tables go to stderr then); `--out PATH`
names what is written (ops: a JSON file; record: the artifact folder; compare / loss: the report
folder).
"""
from __future__ import annotations

import json
import math
import sys

from phyx.cli._common import (
    CliError,
    add_backend_args,
    check_backend_names,
    check_memory,
    check_out_path,
    csv_list,
    deprecated,
    dtype_arg,
    dtype_list_arg,
    human_bytes,
    nonneg_int,
    positive_float,
    positive_int,
    print_json,
    setup_backend,
)


def _text_stream(args):
    return sys.stderr if getattr(args, "json", False) is True else sys.stdout


def _json_out(args) -> str | None:
    """Old spelling `--json PATH` (a file) -> `--out PATH`, with a note."""
    if isinstance(args.json, str):
        deprecated(f"--json {args.json} (a file)", f"--out {args.json} (and --json to print JSON)")
        if args.out and args.out != args.json:
            raise CliError(f"two JSON files given (--json {args.json}, --out {args.out}); give --out only")
        args.out, args.json = args.json, False
    return args.out


def _add_json(p, what: str) -> None:
    # nargs="?": `--json` prints; the deprecated `--json PATH` still writes PATH
    p.add_argument("--json", nargs="?", const=True, default=False, metavar="PATH",
                   help=f"print {what} as JSON on stdout (`--json PATH` is the deprecated spelling of --out PATH)")


# ---- model names and configs -----------------------------------------------------------------

def _model_name(name: str) -> str:
    """A registered parity model (or an alias the model registry knows); a 'module:factory'
    string is never imported from the command line."""
    from phyx.tools.parity.model import registered_models

    known = registered_models()
    if name in known:
        return name
    if ":" not in name:
        from phyx.errors import UnknownModelError
        from phyx.models import registry

        try:
            if registry.canonical(name) in known:
                return name
        except UnknownModelError:
            pass
    raise CliError(f"--model {name!r} is not a registered parity model; choose from {', '.join(known)} "
                   f"(models from other packages register with phyx.tools.parity.model.register_model)")


def _check_config_values(over: dict, base: dict, where: str = "") -> None:
    unknown = sorted(set(over) - set(base))
    if unknown:
        raise CliError(f"--config: unknown key(s) {', '.join(unknown)}{where}; known: {', '.join(sorted(base))}")
    for k, v in over.items():
        ref, name = base[k], f"{where.strip(' in') + '.' if where else ''}{k}"
        if isinstance(ref, dict) and ref and isinstance(v, dict):
            _check_config_values(v, ref, f" in {name}")
        elif isinstance(ref, bool) or isinstance(v, bool):
            if not isinstance(v, bool) and ref is not None:
                raise CliError(f"--config {name}={v!r}: expected true or false")
        elif isinstance(ref, int) and ref > 0:
            if not isinstance(v, int) or v < 1:
                raise CliError(f"--config {name}={v!r}: expected a positive integer")
        elif isinstance(ref, float) or isinstance(v, float):
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise CliError(f"--config {name}={v!r}: expected a finite number >= 0")
        elif isinstance(ref, list) and ref and all(isinstance(x, int) for x in ref):
            if (not isinstance(v, list) or len(v) != len(ref)
                    or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)):
                raise CliError(f"--config {name}={v!r}: expected {len(ref)} positive integers")


def _model_spec(name: str, config_text: str | None, seed: int):
    from phyx.tools.parity.model import get_model_spec

    name = _model_name(name)
    if not config_text:
        return get_model_spec(name, None, seed)
    try:
        over = json.loads(config_text)
    except ValueError as e:
        raise CliError(f"--config is not JSON ({e}); e.g. --config '{{\"depth\": 1}}'") from None
    if not isinstance(over, dict):
        raise CliError(f"--config must be a JSON object of config overrides, got {type(over).__name__}")
    _check_config_values(over, get_model_spec(name, None, seed).config)
    try:
        spec = get_model_spec(name, over, seed)
    except (TypeError, ValueError, KeyError) as e:
        raise CliError(f"--config {config_text}: {e}") from None
    _check_model_memory(spec)
    return spec


def _check_model_memory(spec) -> None:
    """Count the model's parameters on the meta device (nothing allocated) and refuse a model
    whose weights alone exceed this machine's memory."""
    import torch

    try:
        with torch.device("meta"):
            n = sum(p.numel() for p in spec.build().parameters())
    except Exception:  # a model that cannot be built on meta: its own checks run at build time
        return
    check_memory(n * 8, f"--config: the model's {n:,} parameters (float32 weights + float64 reference, "
                        f"{human_bytes(n * 8)})", "use smaller sizes")


# ---- ops ---------------------------------------------------------------------------------------

def _cmd_ops(args) -> int:
    from phyx.tools.parity import ops_report as R
    from phyx.tools.parity.backends import resolve_backends

    out = _json_out(args)
    check_out_path(out, overwrite=args.overwrite)
    backends = check_backend_names(csv_list(args.backends)) if args.backends else None
    usable, skipped = resolve_backends(backends)
    if not usable:
        raise CliError("nothing to compare: no requested backend is available here ("
                       + "; ".join(f"{n}: {why}" for n, why in skipped.items()) + "); see `phyx info`")
    text = _text_stream(args)
    rep = R.run_op_parity(backends, args.dtypes, policy=args.policy, seed=args.seed,
                          progress=lambda b: print(f"[parity] {R.label(b)} done", file=sys.stderr))
    print(R.format_table(rep, only_problems=args.only_problems), file=text)
    print(file=text)
    print(R.format_summary(rep), file=text)
    if out:
        R.write_json(rep, out)
        print(f"wrote {out}", file=text)
    if args.json:
        print_json(rep.to_dict())
    if not rep.rows:
        raise CliError("nothing was compared: none of the requested backends is available here "
                       "(see `phyx info`); an empty comparison never passes")
    return 1 if rep.failed else 0


# ---- record / compare --------------------------------------------------------------------------

def _check_artifact_out(out: str, overwrite: bool) -> None:
    """Before any work: --out is a new folder, or (with --overwrite) an artifact phyx wrote."""
    import os

    from phyx.tools.parity import artifact as A

    if not os.path.lexists(out):
        check_out_path(out, "dir")
        return
    if not overwrite:
        raise CliError(f"--out {out} exists; pass --overwrite to replace an earlier artifact, or choose "
                       f"another --out")
    why = A.replace_refusal(out)
    if why:
        raise CliError(f"--out {out} is not a parity artifact ({why}); --overwrite replaces only "
                       f"artifacts phyx recorded: remove it yourself or choose another --out")


def _cmd_record(args) -> int:
    from phyx.tools.parity import artifact as A
    from phyx.tools.parity.determinism import set_determinism
    from phyx.tools.parity.model import record_run

    _check_artifact_out(args.out, args.overwrite)
    spec = _model_spec(args.model, args.config, args.seed)
    source = A.read(args.replay_from) if args.replay_from else None
    setup_backend(args)
    set_determinism(debug=args.debug)  # also TF32 / HF32 off
    run = record_run(spec, None, args.dtype, mode=args.mode, per_op=args.per_op, replay_from=source)
    path = A.write(run, args.out, overwrite=args.overwrite)
    env = run.manifest["environment"]
    text = _text_stream(args)
    print(f"recorded {spec.name} on {env['backend']}{' (EMULATED)' if env['emulated'] else ''} "
          f"dtype={args.dtype} policy={env['policy']} layers={len(run.layers)} -> {path}", file=text)
    if source is not None:
        errs = run.manifest.get("replay_errors") or {}
        print(f"replayed {len(run.manifest['replay_of']['layers'])} layers of {args.replay_from}"
              + (f"; {len(errs)} could not be replayed" if errs else ""), file=text)
        for name, why in errs.items():
            print(f"  not replayed: {name}: {why}", file=text)
    if args.json:
        print_json(run.manifest)
    return 0


def _cmd_compare(args) -> int:
    from phyx.tools.parity import artifact as A
    from phyx.tools.parity.compare import compare_runs, format_compare

    json_file = None
    if isinstance(args.json, str):  # deprecated: --json FILE
        deprecated(f"--json {args.json} (a file)", "--out DIR (writes compare.json there) and --json to print")
        json_file, args.json = args.json, False
    if args.report:
        deprecated("--report DIR", "--out DIR")
        if args.out and args.out != args.report:
            raise CliError(f"two report folders given (--report {args.report}, --out {args.out}); give --out only")
        args.out = args.report
    check_out_path(args.out, "dir")
    check_out_path(json_file)
    if not args.b and not args.live:
        raise CliError("give artifact B to compare A with, or --live to run B here now")
    if args.b and args.live:
        raise CliError("give either artifact B or --live, not both")
    a = A.read(args.a)
    if args.live:
        from phyx.tools.parity.model import live_spec, record_run

        r = a.manifest["run"]
        # the model comes from --model or the registry, never from the artifact (it is data)
        spec = live_spec(a, _model_name(args.model) if args.model else None)
        setup_backend(args)
        b = record_run(spec, None, r.get("dtype", "fp32"), mode=a.manifest.get("capture_mode", "full"),
                       per_op=r.get("per_op", False), replay_from=a)
    else:
        b = A.read(args.b)
    rep = compare_runs(a, b, allow_incomparable=args.force)
    text = _text_stream(args)
    print(format_compare(rep), file=text)
    from phyx.io.atomic import write_text_atomic

    if args.out:
        import os

        from phyx.tools.parity.report import write_compare_report

        print(f"report: {write_compare_report(rep, args.out)}", file=text)
        write_text_atomic(os.path.join(args.out, "compare.json"), json.dumps(rep.to_dict(), indent=1, default=str))
    if json_file:
        write_text_atomic(json_file, json.dumps(rep.to_dict(), indent=1, default=str))
    if args.json:
        print_json(rep.to_dict())
    return 1 if rep.failed else 0


# ---- loss --------------------------------------------------------------------------------------

def _cmd_loss(args) -> int:
    from phyx.tools.parity.backends import resolve_backends
    from phyx.tools.parity.determinism import set_determinism
    from phyx.tools.parity.loss import run_spec_loss_parity

    if args.report:
        deprecated("--report DIR", "--out DIR")
        args.out = args.out or args.report
    check_out_path(args.out, "dir")
    if args.window > args.steps:
        raise CliError(f"--window {args.window} is longer than the run (--steps {args.steps}); use "
                       f"--window <= --steps")
    requested = check_backend_names(csv_list(args.backends) or [])
    usable, skipped = resolve_backends(requested)
    if skipped:
        raise CliError("unavailable backend(s): " + "; ".join(f"{n}: {why}" for n, why in skipped.items()))
    if len(usable) < 2:
        raise CliError("give at least two different backends, e.g. --backends cpu,npu-emulated")
    spec = _model_spec(args.model, None, args.seed)
    if spec.loss is None:
        raise CliError(f"--model {spec.name} has no training loss; use one of tiny-wan-t2v, tiny-wan-i2v, "
                       f"tiny-wan-ti2v, tiny-lingbot, tiny-cosmos-predict2-t2i, tiny-cosmos-predict2-v2w")
    set_determinism()
    curves, results = run_spec_loss_parity(spec, usable, steps=args.steps, dtype=args.dtype,
                                           window=args.window, lr=args.lr, policy=args.policy)
    text = _text_stream(args)
    for r in results:
        print(r.text(), file=text)
    print("steps: " + "  ".join(f"{c.label}: " + ", ".join(f"{x:.6f}" for x in c.loss) for c in curves), file=text)
    if args.out:
        from phyx.tools.parity.report import write_loss_report

        print(f"report: {write_loss_report(spec.name, curves, results, args.out)}", file=text)
    if args.json:
        print_json({"model": spec.name, "results": [r.to_dict() for r in results],
                    "curves": {c.label: {"loss": c.loss, "grad_norm": c.grad_norm} for c in curves}})
    if not results:
        raise CliError("nothing was compared; an empty comparison never passes")
    return 1 if any(r.failed for r in results) else 0


# ---- parser ------------------------------------------------------------------------------------

def register(sub) -> None:
    p = sub.add_parser("parity", help="cross-backend parity: ops, record, compare, loss")
    ps = p.add_subparsers(dest="parity_cmd", required=True)

    po = ps.add_parser("ops", help="every op on every available backend vs a float64 CPU oracle")
    add_backend_args(po, multi=True, policy_default="fast")
    po.add_argument("--dtypes", type=dtype_list_arg, default=["fp32", "bf16", "fp16"],
                    help="comma list of fp32|bf16|fp16 (or the long names); default all three")
    po.add_argument("--seed", type=nonneg_int, default=0)
    po.add_argument("--out", default=None, metavar="PATH", help="write the full report as a JSON file")
    po.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _add_json(po, "the full report")
    po.add_argument("--only-problems", action="store_true", help="print only non-PASS rows")
    po.set_defaults(func=_cmd_ops)

    pl = ps.add_parser("loss", help="loss parity: a short training run per backend, curves compared "
                                    "by windowed mean relative error (<= 1%%), step-0 gradients")
    pl.add_argument("--model", required=True,
                    help="a model with a training loss: tiny-wan / -i2v / -ti2v, tiny-lingbot, "
                         "tiny-cosmos-predict2 / -v2w (or an alias)")
    add_backend_args(pl, multi=True, policy_default="fast")
    pl.set_defaults(backends="cpu,npu-emulated")
    pl.add_argument("--steps", type=positive_int, default=8)
    pl.add_argument("--window", type=positive_int, default=4)
    pl.add_argument("--dtype", type=dtype_arg, default="fp32", help="fp32|bf16|fp16 (or the long names)")
    pl.add_argument("--lr", type=positive_float, default=1e-3)
    pl.add_argument("--seed", type=nonneg_int, default=0)
    pl.add_argument("--out", default=None, metavar="DIR",
                    help="write loss / grad-norm PNGs, markdown, HTML and JSON here")
    pl.add_argument("--report", default=None, help="deprecated spelling of --out")
    pl.add_argument("--json", action="store_true", help="print the results as JSON")
    pl.set_defaults(func=_cmd_loss)

    pr = ps.add_parser("record", help="record a model run (per-layer tensors + manifest) to a "
                                      "portable artifact directory")
    pr.add_argument("--model", default="tiny-dit", help="a registered parity model (see `phyx parity record "
                                                       "--model x` for the list)")
    pr.add_argument("--config", default=None, help="JSON object of model config overrides")
    add_backend_args(pr, policy_default="fast")
    pr.add_argument("--dtype", type=dtype_arg, default="fp32", help="fp32|bf16|fp16 (or the long names)")
    pr.add_argument("--seed", type=nonneg_int, default=0)
    pr.add_argument("--mode", default="full", choices=["full", "stats"])
    pr.add_argument("--per-op", action="store_true", help="also record every phyx.ops call")
    pr.add_argument("--replay-from", default=None,
                    help="artifact of the other side: replay its layer inputs here too "
                         "(per-layer first-divergence without accumulated drift)")
    pr.add_argument("--debug", action="store_true",
                    help="also set the debug switches (ASCEND_LAUNCH_BLOCKING, INF_NAN_MODE_ENABLE)")
    pr.add_argument("--out", required=True, metavar="DIR", help="the artifact folder")
    pr.add_argument("--overwrite", action="store_true", help="replace an earlier artifact at --out")
    pr.add_argument("--json", action="store_true", help="print the manifest as JSON")
    pr.set_defaults(func=_cmd_record)

    pc = ps.add_parser("compare", help="compare artifact A with artifact B (or a live run)")
    pc.add_argument("a")
    pc.add_argument("b", nargs="?")
    pc.add_argument("--live", action="store_true", help="B = a run here now, replaying A's layers")
    pc.add_argument("--model", default=None,
                    help="with --live: the model to run (default: the registered model A names; "
                         "an artifact never chooses code to import)")
    add_backend_args(pc, policy_default="fast")
    pc.add_argument("--force", action="store_true", help="compare even if not comparable")
    pc.add_argument("--out", default=None, metavar="DIR",
                    help="write markdown + HTML reports, PNG plots and compare.json here")
    pc.add_argument("--report", default=None, help="deprecated spelling of --out")
    _add_json(pc, "the comparison")
    pc.set_defaults(func=_cmd_compare)
