"""`phyx parallel plan`: communication volume and HCCL buffer cost of a layout (cfg x sp x tp,
sp = ulysses x ring)."""
from __future__ import annotations

import argparse

from phyx.cli._common import CliError, positive_float, positive_int, print_json

_SIZES = ("seq_len", "hidden", "heads", "kv_heads", "head_dim", "ffn", "layers", "batch", "dtype_bytes")


def layout_arg(text: str):
    """'CFGxSPxTP[xRING]': three or four positive integers, e.g. 2x2x2; a fourth splits sp as
    ulysses x ring (1x4x1x2: sp 4 = ulysses 2 x ring 2)."""
    from phyx.errors import ParallelConfigError
    from phyx.parallel.state import ParallelConfig

    parts = text.lower().split("x")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = None
    if nums is None or len(nums) not in (3, 4) or min(nums) < 1:
        raise argparse.ArgumentTypeError(f"layout {text!r} is not cfg x sp x tp [x ring]: three or four "
                                         f"positive integers joined by 'x', e.g. 1x2x2 or 1x4x1x2")
    try:
        return ParallelConfig(*nums[:3], ring=nums[3] if len(nums) > 3 else None)
    except ParallelConfigError as e:
        raise argparse.ArgumentTypeError(f"layout {text!r}: {e}") from None


def _cmd_plan(args) -> int:
    from dataclasses import replace

    from phyx.parallel.plan import PRESETS, format_plan, plan

    shape = PRESETS[args.model]
    over = {k: getattr(args, k) for k in _SIZES if getattr(args, k) is not None}
    shape = replace(shape, **over) if over else shape
    if shape.kv_heads > shape.heads or shape.heads % shape.kv_heads:
        raise CliError(f"--kv-heads {shape.kv_heads} must divide --heads {shape.heads} (GQA)")
    layouts = [layout_arg(c) if isinstance(c, str) else c for c in args.layout]  # the defaults are text
    out = [plan(shape, c, args.hccl_buffsize, sp_attention=args.sp_attention,
                p2p_buffsize_mb=args.p2p_hccl_buffsize) for c in layouts]
    if args.json:
        print_json(out)
    else:
        print("\n\n".join(format_plan(p) for p in out))
    return 0


def register(sub) -> None:
    p = sub.add_parser("parallel", help="parallel layouts: communication plan")
    s = p.add_subparsers(dest="parallel_cmd", required=True)
    pp = s.add_parser("plan", help="bytes per rank per layer of each mode, and HCCL buffer memory")
    from phyx.parallel.plan import PRESETS

    pp.add_argument("--model", default="wan2.1-1.3b-480p", choices=sorted(PRESETS))
    pp.add_argument("--layout", nargs="+", type=layout_arg, default=["1x1x2", "1x2x1", "2x1x1", "2x2x2"],
                    help="cfg x sp x tp [x ring], e.g. 2x2x2; 1x4x1x2 = sp 4 as ulysses 2 x ring 2 "
                         "(several allowed)")
    for name in _SIZES:
        pp.add_argument("--" + name.replace("_", "-"), dest=name, type=positive_int, default=None,
                        help="override the preset (a positive integer)")
    pp.add_argument("--hccl-buffsize", type=positive_float, default=None, metavar="MB",
                    help="MB per communicator buffer (default: env HCCL_BUFFSIZE or 200)")
    pp.add_argument("--p2p-hccl-buffsize", type=positive_float, default=None, metavar="MB",
                    help="MB per point-to-point communicator (default: env P2P_HCCL_BUFFSIZE or 20)")
    pp.add_argument("--sp-attention", default="ulysses", choices=["ulysses", "ring"],
                    help="sequence-parallel attention: Ulysses all-to-all or ring (point-to-point)")
    pp.add_argument("--json", action="store_true", help="print the plans as JSON")
    pp.set_defaults(func=_cmd_plan)
