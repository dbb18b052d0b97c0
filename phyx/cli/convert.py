"""`phyx convert`: a pickled .pt/.pth release to safetensors (the only unpickling in phyx)."""
from __future__ import annotations

import argparse
from pathlib import Path

from phyx.cli._common import CliError, check_out_path, deprecated, dtype_arg, print_json, torch_dtype


def _cmd(args) -> int:
    from phyx.io.convert import convert

    out = args.out
    if args.output is not None:
        if out is not None and out != args.output:
            raise CliError(f"two outputs given ({args.output} and --out {out}); give --out only")
        deprecated("the positional OUTPUT", "--out OUTPUT")
        out = args.output
    src = Path(args.input)
    if not src.is_file():
        raise CliError(f"{src} is not a file; give the official .pt / .pth checkpoint")
    dst = out or str(src.with_suffix(".safetensors"))
    check_out_path(dst)
    if Path(dst).resolve() == src.resolve():
        raise CliError(f"--out {dst} is the input itself; give another path")
    summary = convert(str(src), dst, torch_dtype(args.dtype) if args.dtype else None, overwrite=args.overwrite)
    if args.json:
        print_json(summary)
    else:
        print(f"wrote {dst}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert a pickled .pt/.pth checkpoint to safetensors "
                                       "(torch.load weights_only=True; the only unpickling in phyx)")
    p.add_argument("input", help="official .pt / .pth file")
    p.add_argument("output", nargs="?", default=None, help=argparse.SUPPRESS)  # deprecated spelling of --out
    p.add_argument("--out", default=None, metavar="PATH",
                   help="output .safetensors (default: beside the input)")
    p.add_argument("--dtype", type=dtype_arg, default=None,
                   help="cast floating tensors: fp32|bf16|fp16 (or float32|bfloat16|float16)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--json", action="store_true", help="print the conversion summary as JSON")
    p.set_defaults(func=_cmd)

