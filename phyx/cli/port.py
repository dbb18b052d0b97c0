"""`phyx port scan PATH...` and `phyx port rules`."""
from __future__ import annotations

import json

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


def register(sub) -> None:
    p = sub.add_parser("port", help="porting kit: scan a source tree for CUDA-only code")
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
    r = psub.add_parser("rules", help="list the categories and their phyx replacements")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_cmd_rules)
