"""`phyx port scan PATH...`, `phyx port rules` and `phyx port run TARGET`."""
from __future__ import annotations

import json
import sys

from phyx.cli._common import CliError
from phyx.tools.porting.rules import CATEGORIES, expand
from phyx.tools.porting.scanner import scan_paths


def _cmd_scan(args) -> int:
    try:
        fail_on = expand(args.fail_on) if args.fail_on else set()
    except ValueError as e:
        raise CliError(f"--fail-on: {e}") from None
    try:
        report = scan_paths(args.paths, exclude=args.exclude or ())
    except FileNotFoundError as e:
        raise CliError(f"{e}") from None
    failing = [f for f in report.findings if f.category in fail_on]
    if args.json:
        out = report.to_dict()
        out["fail_on"] = sorted(fail_on)
        out["failing"] = len(failing)
        print(json.dumps(out, indent=2))
    else:
        for f in report.findings:
            tag = "trap" if f.kind == "numerical-trap" else "cuda"
            print(f"{f.path}:{f.line}:{f.col}: [{f.category}] ({tag}) {f.symbol}")
            print(f"    {f.source}")
            print(f"    -> {f.replacement}")
        n_cuda = sum(f.kind == "cuda-only" for f in report.findings)
        n_trap = len(report.findings) - n_cuda
        print(f"{len(report.findings)} finding(s) in {report.files_scanned} file(s): "
              f"{n_cuda} CUDA-only, {n_trap} numerical trap(s); {report.suppressed} suppressed"
              + (f"; regex fallback for {len(report.regex_fallback)} unparseable file(s)"
                 if report.regex_fallback else ""))
        for why in report.skipped:
            print(f"skipped {why}")
        if report.findings:
            print("by category: " + ", ".join(f"{k}={v}" for k, v in report.counts().items()))
        if fail_on:
            print(f"fail-on {','.join(sorted(fail_on)) if len(fail_on) < 6 else args.fail_on}: "
                  f"{len(failing)} finding(s) -> exit {1 if failing else 0}")
    return 1 if failing else 0


def _cmd_rules(args) -> int:
    if args.json:
        print(json.dumps({n: {"kind": c.kind, "what": c.what, "replacement": c.replacement,
                              "shim": c.shim} for n, c in CATEGORIES.items()}, indent=2))
        return 0
    for n, c in CATEGORIES.items():
        shim = f"  [phyx_patches shim: {c.shim}]" if c.shim else ""
        print(f"{n:<20} {c.kind:<15} {c.what}\n{'':<36}-> {c.replacement}{shim}")
    return 0


def _cmd_run(args) -> int:
    from phyx.tools.porting import port_report
    from phyx.tools.porting.port_run import run_port

    res = run_port(args.target, args.backend, policy=args.policy, dtype=args.dtype,
                   autocast=args.autocast, seed=args.seed, depth=args.depth,
                   parity=not args.no_parity, inputs=args.inputs, paths=args.path or (),
                   sdpa=args.sdpa)
    if args.json:
        print(json.dumps(port_report.to_dict(res), indent=2, default=str))
    else:
        print(port_report.to_markdown(res), end="")
    if args.out:
        paths = port_report.write(res, args.out)
        print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    if args.strict and (res.routed_nothing or res.failed):
        return 1
    return 0


def register(sub) -> None:
    p = sub.add_parser("port", help="porting kit: scan a source tree for CUDA-only code, run a "
                                    "module under the shims with proof")
    psub = p.add_subparsers(dest="port_cmd", required=True)
    s = psub.add_parser("scan", help="find CUDA-only usage and numerical traps, with the phyx "
                                     "replacement for each")
    s.add_argument("paths", nargs="+", metavar="PATH")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--fail-on", default=None, metavar="CATS",
                   help="exit 1 if any finding is in these categories: 'any', 'cuda-only', "
                        "'numerical-trap' or a comma list (see `phyx port rules`)")
    s.add_argument("--exclude", action="append", metavar="GLOB",
                   help="skip files or directories matching GLOB (repeatable)")
    s.set_defaults(func=_cmd_scan)
    run = psub.add_parser("run", help="run a module under the shims on a backend and report what "
                                      "ran through the backend, the traps hit and per-layer parity "
                                      "against float64")
    run.add_argument("target", help="a driver file defining build() and inputs(seed) (optional "
                                    "forward(model, inputs), LAYERS), or 'package.module:factory'")
    run.add_argument("--inputs", default=None, metavar="MOD:FN",
                     help="with module:factory: FN(seed) -> dict or tuple of CPU tensors")
    run.add_argument("--backend", default="npu-emulated")
    run.add_argument("--policy", default="fast", choices=("fast", "reference"))
    run.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    run.add_argument("--autocast", default=None, choices=("bf16", "fp16"),
                     help="run the forward inside torch.autocast(dtype) (judged at its limits)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--depth", type=int, default=2, help="module path depth of the op table")
    run.add_argument("--path", action="append", metavar="DIR",
                     help="put DIR on sys.path first (an upstream checkout; repeatable)")
    run.add_argument("--sdpa", action="store_true",
                     help="also route plain torch SDPA through phyx.ops.attention (the 'sdpa' shim)")
    run.add_argument("--no-parity", action="store_true", help="skip the float64 comparison")
    run.add_argument("--out", default=None, metavar="DIR",
                     help="also write port_report.md / .html / .json there (atomically)")
    run.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    run.add_argument("--strict", action="store_true",
                     help="exit 1 when nothing went through the backend or parity fails")
    run.set_defaults(func=_cmd_run)
    r = psub.add_parser("rules", help="list the categories and their phyx replacements")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_cmd_rules)
