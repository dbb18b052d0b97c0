"""`phyx convert`: a pickled .pt/.pth release to safetensors (the only unpickling in phyx)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from phyx.io.convert import convert

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _cmd(args) -> int:
    dst = args.output or str(Path(args.input).with_suffix(".safetensors"))
    summary = convert(args.input, dst, _DTYPES[args.dtype] if args.dtype else None,
                      overwrite=args.overwrite)
    print(json.dumps(summary, indent=1))
    return 0


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert a pickled .pt/.pth checkpoint to safetensors "
                                       "(torch.load weights_only=True; the only unpickling in phyx)")
    p.add_argument("input", help="official .pt / .pth file")
    p.add_argument("output", nargs="?", default=None, help="output .safetensors (default: beside input)")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default=None, help="cast floating tensors")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_cmd)
