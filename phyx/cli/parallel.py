"""`phyx parallel plan`: communication volume and HCCL buffer cost of a layout (cfg x sp x tp,
sp = ulysses x ring)."""
from __future__ import annotations

import json


def _cmd_plan(args) -> int:
    from dataclasses import replace

    from phyx.parallel.plan import PRESETS, format_plan, plan
    from phyx.parallel.state import ParallelConfig

    shape = PRESETS[args.model]
    over = {k: getattr(args, k) for k in ("seq_len", "hidden", "heads", "kv_heads", "head_dim",
                                          "ffn", "layers", "batch", "dtype_bytes")
            if getattr(args, k) is not None}
    shape = replace(shape, **over) if over else shape
    layouts = []
    for s in args.layout:   # cfg x sp x tp [x ring]; sp = ulysses x ring
        n = [int(v) for v in s.split("x")]
        layouts.append(ParallelConfig(*n[:3], ring=n[3] if len(n) > 3 else None))
    out = [plan(shape, c, args.hccl_buffsize, sp_attention=args.sp_attention,
                p2p_buffsize_mb=args.p2p_hccl_buffsize) for c in layouts]
    print(json.dumps(out, indent=2) if args.json else "\n\n".join(format_plan(p) for p in out))
    return 0


def register(sub) -> None:
    p = sub.add_parser("parallel", help="parallel layouts: communication plan")
    s = p.add_subparsers(dest="parallel_cmd", required=True)
    pp = s.add_parser("plan", help="bytes per rank per layer of each mode, and HCCL buffer memory")
    from phyx.parallel.plan import PRESETS

    pp.add_argument("--model", default="wan2.1-1.3b-480p", choices=sorted(PRESETS))
    pp.add_argument("--layout", nargs="+", default=["1x1x2", "1x2x1", "2x1x1", "2x2x2"],
                    help="cfg x sp x tp [x ring], e.g. 2x2x2; 1x4x1x2 = sp 4 as ulysses 2 x ring 2")
    for name in ("seq_len", "hidden", "heads", "kv_heads", "head_dim", "ffn", "layers", "batch",
                 "dtype_bytes"):
        pp.add_argument("--" + name.replace("_", "-"), dest=name, type=int, default=None)
    pp.add_argument("--hccl-buffsize", type=float, default=None, help="MB (default env or 200)")
    pp.add_argument("--p2p-hccl-buffsize", type=float, default=None,
                    help="MB per point-to-point communicator (default env P2P_HCCL_BUFFSIZE or 20)")
    pp.add_argument("--sp-attention", default="ulysses", choices=["ulysses", "ring"],
                    help="sequence-parallel attention: Ulysses all-to-all or ring (point-to-point)")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=_cmd_plan)
