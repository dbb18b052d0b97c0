"""`phyx parity ...` subcommands (registered by phyx/cli.py)."""
from __future__ import annotations

import sys


def _split(s):
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def _cmd_ops(args) -> int:
    from phyx.tools.parity import ops_report as R

    rep = R.run_op_parity(_split(args.backends), _split(args.dtypes), policy=args.policy,
                          seed=args.seed,
                          progress=lambda b: print(f"[parity] {R.label(b)} done", file=sys.stderr))
    print(R.format_table(rep, only_problems=args.only_problems))
    print()
    print(R.format_summary(rep))
    if args.json:
        R.write_json(rep, args.json)
        print(f"wrote {args.json}")
    return 1 if rep.failed else 0


def register(sub) -> None:
    p = sub.add_parser("parity", help="cross-backend parity: ops, record, compare, loss")
    ps = p.add_subparsers(dest="parity_cmd", required=True)
    po = ps.add_parser("ops", help="every op on every available backend vs a float64 CPU oracle")
    po.add_argument("--backends", default=None,
                    help="comma list (default: every backend available here, cpu first)")
    po.add_argument("--dtypes", default="fp32,bf16,fp16")
    po.add_argument("--policy", default="fast", choices=["fast", "reference"])
    po.add_argument("--seed", type=int, default=0)
    po.add_argument("--json", default=None, help="also write the full report as JSON")
    po.add_argument("--only-problems", action="store_true", help="print only non-PASS rows")
    po.set_defaults(func=_cmd_ops)
    _register_model_cmds(ps)


def _cmd_record(args) -> int:
    import json as _json

    import phyx
    from phyx.tools.parity import artifact as A
    from phyx.tools.parity.determinism import set_determinism
    from phyx.tools.parity.model import get_model_spec, record_run

    if args.backend:
        phyx.set_backend(args.backend, args.policy)
    else:
        phyx.get_backend()
        phyx.set_policy(args.policy)
    set_determinism(debug=args.debug)  # also TF32 / HF32 off
    spec = get_model_spec(args.model, _json.loads(args.config) if args.config else None, args.seed)
    source = A.read(args.replay_from) if args.replay_from else None
    run = record_run(spec, None, args.dtype, mode=args.mode, per_op=args.per_op, replay_from=source)
    path = A.write(run, args.out, overwrite=args.overwrite)
    env = run.manifest["environment"]
    print(f"recorded {spec.name} on {env['backend']}{' (EMULATED)' if env['emulated'] else ''} "
          f"dtype={args.dtype} policy={env['policy']} layers={len(run.layers)} -> {path}")
    if source is not None:
        errs = run.manifest.get("replay_errors") or {}
        print(f"replayed {len(run.manifest['replay_of']['layers'])} layers of {args.replay_from}"
              + (f"; {len(errs)} could not be replayed" if errs else ""))
        for name, why in errs.items():
            print(f"  not replayed: {name}: {why}")
    return 0


def _cmd_compare(args) -> int:
    from phyx.tools.parity import artifact as A
    from phyx.tools.parity.compare import compare_runs, format_compare

    a = A.read(args.a)
    if args.live:
        import phyx
        from phyx.tools.parity.model import live_spec, record_run

        if args.backend:
            phyx.set_backend(args.backend, args.policy)
        r = a.manifest["run"]
        # the model comes from --model or the registry, never from the artifact (it is data)
        spec = live_spec(a, args.model)
        b = record_run(spec, None, r.get("dtype", "fp32"), mode=a.manifest.get("capture_mode", "full"),
                       per_op=r.get("per_op", False), replay_from=a)
    elif args.b:
        b = A.read(args.b)
    else:
        raise SystemExit("phyx parity compare: give B (an artifact) or --live")
    rep = compare_runs(a, b, allow_incomparable=args.force)
    print(format_compare(rep))
    if args.report:
        from phyx.tools.parity.report import write_compare_report

        print(f"report: {write_compare_report(rep, args.report)}")
    if args.json:
        import json as _json

        from phyx.tools.parity._io import atomic_write_text

        atomic_write_text(args.json, _json.dumps(rep.to_dict(), indent=1, default=str))
    return 1 if rep.failed else 0


def _cmd_loss(args) -> int:
    from phyx.tools.parity.backends import resolve_backends
    from phyx.tools.parity.determinism import set_determinism
    from phyx.tools.parity.loss import run_spec_loss_parity
    from phyx.tools.parity.model import get_model_spec

    requested = _split(args.backends)
    usable, skipped = resolve_backends(requested)
    if skipped:
        raise SystemExit("phyx parity loss: unavailable backend(s): "
                         + "; ".join(f"{n}: {why}" for n, why in skipped.items()))
    if len(usable) < 2:
        raise SystemExit("phyx parity loss: give at least two backends, e.g. --backends cpu,npu-emulated")
    set_determinism()
    spec = get_model_spec(args.model, None, args.seed)
    curves, results = run_spec_loss_parity(spec, usable, steps=args.steps, dtype=args.dtype,
                                           window=args.window, lr=args.lr, policy=args.policy)
    for r in results:
        print(r.text())
    print("steps: " + "  ".join(f"{c.label}: " + ", ".join(f"{x:.6f}" for x in c.loss) for c in curves))
    if args.report:
        from phyx.tools.parity.report import write_loss_report

        print(f"report: {write_loss_report(spec.name, curves, results, args.report)}")
    return 1 if any(r.failed for r in results) else 0


def _model_help() -> str:
    try:
        from phyx.tools.parity.model import registered_models

        return "registered model (" + ", ".join(registered_models()) + ") or 'module:factory'"
    except Exception as e:  # never break the CLI's help over one model package
        return f"registered model or 'module:factory' (model list unavailable: {e})"


def _register_model_cmds(ps) -> None:
    pl = ps.add_parser("loss", help="loss parity: a short training run per backend, curves compared "
                                    "by windowed mean relative error (<= 1%%), step-0 gradients")
    pl.add_argument("--model", required=True,
                    help="a model with a training loss: tiny-wan / -i2v / -ti2v, tiny-lingbot, "
                         "tiny-cosmos-predict2 / -v2w (or an alias)")
    pl.add_argument("--backends", default="cpu,npu-emulated", help="comma list; the first is the baseline")
    pl.add_argument("--steps", type=int, default=8)
    pl.add_argument("--window", type=int, default=4)
    pl.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    pl.add_argument("--lr", type=float, default=1e-3)
    pl.add_argument("--policy", default="fast", choices=["reference", "fast"])
    pl.add_argument("--seed", type=int, default=0)
    pl.add_argument("--report", default=None, help="write loss / grad-norm PNGs, markdown, HTML and JSON here")
    pl.set_defaults(func=_cmd_loss)
    pr = ps.add_parser("record", help="record a model run (per-layer tensors + manifest) to a "
                                      "portable artifact directory")
    pr.add_argument("--model", default="tiny-dit", help=_model_help())
    pr.add_argument("--config", default=None, help="JSON overrides of the model config")
    pr.add_argument("--backend", default=None)
    pr.add_argument("--policy", default="fast", choices=["reference", "fast"],
                    help="fast (default): the vendor kernels, what parity must prove")
    pr.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--mode", default="full", choices=["full", "stats"])
    pr.add_argument("--per-op", action="store_true", help="also record every phyx.ops call")
    pr.add_argument("--replay-from", default=None,
                    help="artifact of the other side: replay its layer inputs here too "
                         "(per-layer first-divergence without accumulated drift)")
    pr.add_argument("--debug", action="store_true",
                    help="also set the debug switches (ASCEND_LAUNCH_BLOCKING, INF_NAN_MODE_ENABLE)")
    pr.add_argument("--out", required=True)
    pr.add_argument("--overwrite", action="store_true")
    pr.set_defaults(func=_cmd_record)
    pc = ps.add_parser("compare", help="compare artifact A with artifact B (or a live run)")
    pc.add_argument("a")
    pc.add_argument("b", nargs="?")
    pc.add_argument("--live", action="store_true", help="B = a run here now, replaying A's layers")
    pc.add_argument("--model", default=None,
                    help="with --live: the model to run (default: the registered model A names; "
                         "an artifact never chooses code to import)")
    pc.add_argument("--backend", default=None)
    pc.add_argument("--policy", default="fast", choices=["reference", "fast"])
    pc.add_argument("--force", action="store_true", help="compare even if not comparable")
    pc.add_argument("--report", default=None, help="write markdown + HTML reports and PNG plots here")
    pc.add_argument("--json", default=None)
    pc.set_defaults(func=_cmd_compare)
