"""`phyx certify`: the first-NPU-contact certificate (and the recorder of its GPU reference set).

    phyx certify --backend npu [--out DIR]            # on the first Ascend machine
    phyx certify --backend npu-emulated [--out DIR]   # the CPU rehearsal (CI)
    phyx certify record --backend cuda --out DIR      # the reference set, on a GPU

Exit status: 0 pass, 1 a check failed, 2 usage error."""
from __future__ import annotations

import sys


def _cmd(args) -> int:
    from phyx.tools.certify import artifacts as ART

    if args.action == "record":
        if not args.out:
            raise ART.CertifyError("phyx certify record needs --out DIR (e.g. phyx/tools/certify/artifacts)")
        out = ART.record(args.backend, args.out, overwrite=args.overwrite)
        print(f"recorded the certificate reference set on {args.backend} -> {out}")
        return 0
    from phyx.tools.certify import run_certificate

    rep = run_certificate(args.backend, args.out or "phyx-certificate", args.artifacts, slow=args.slow,
                          log=lambda s: print(s, file=sys.stderr))
    print(rep["overall"]["label"])
    return 1 if rep["overall"]["verdict"] == "FAIL" else 0


def register(sub) -> None:
    p = sub.add_parser("certify", help="first-NPU-contact certificate: op matrix, hardware facts, "
                                       "tiny-model and loss parity against shipped GPU artifacts")
    p.add_argument("action", nargs="?", default="run", choices=["run", "record"],
                   help="run the certificate (default) or record its reference set")
    p.add_argument("--backend", required=True,
                   help="run: npu or npu-emulated; record: cuda (or cpu for a labelled stand-in)")
    p.add_argument("--out", default=None, help="report directory (run; default ./phyx-certificate) "
                                               "or reference-set directory (record)")
    p.add_argument("--artifacts", default=None,
                   help="reference set to compare against (default: the one shipped with phyx)")
    p.add_argument("--slow", action="store_true",
                   help="also run the live HCCL timeout race (about 3 minutes, 2 NPUs)")
    p.add_argument("--overwrite", action="store_true", help="record: replace an existing set")
    p.set_defaults(func=_cmd)
