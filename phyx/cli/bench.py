"""`phyx bench ...`: op and model-step benchmarks writing one JSON per machine, `merge`
building the cross-machine (GPU vs NPU) table from such files, and `plot` drawing them."""
from __future__ import annotations

import sys

from phyx.cli._common import (
    CliError,
    add_backend_args,
    check_out_path,
    choice_list,
    positive_float,
    positive_int,
    print_json,
    setup_backend,
)

SECTIONS = ("peaks", "attention", "fused", "dispatch")
MODES = ("forward", "train")


def _finish(result, args):
    from phyx.tools.bench.env import write_json

    if args.out:
        write_json(result, args.out)
        print(f"wrote {args.out}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print_json(result)
    return 0


def _cmd_ops(args) -> int:
    from phyx.tools.bench.ops import ATTENTION_SHAPES, QUICK_ATTENTION_SHAPES, run_ops
    from phyx.tools.bench.profile import maybe_profile

    check_out_path(args.out, overwrite=args.overwrite)
    sections = tuple(choice_list(args.sections, SECTIONS, "--sections")) if args.sections else SECTIONS
    shapes = None
    if args.shapes:
        shapes = choice_list(args.shapes, sorted({**ATTENTION_SHAPES, **QUICK_ATTENTION_SHAPES}), "--shapes")
    setup_backend(args)
    with maybe_profile(args.profile):
        result = run_ops(quick=args.quick, sections=sections, attention_shapes=shapes)
    if args.profile:
        result["meta"]["profile_dir"] = args.profile
    return _finish(result, args)


def _cmd_models(args) -> int:
    from phyx.tools.bench.models import MODELS, run_models

    check_out_path(args.out, overwrite=args.overwrite)
    models = None
    if args.models:   # canonical names or their aliases (phyx.models.registry)
        from phyx.models import registry

        models = choice_list(args.models, [*MODELS, *(a for a in registry.aliases() if a not in MODELS)],
                             "--models")
    modes = choice_list(args.modes, MODES, "--modes")
    setup_backend(args)
    result = run_models(models=models, modes=modes, quick=args.quick,
                        peer=not args.no_peer, peak_tflops=args.peak_tflops, layers=args.layers,
                        breakdown=args.breakdown, compile=args.compile,
                        peer_attention=args.peer_attention, profile_dir=args.profile)
    if args.profile:
        result["meta"]["profile_dir"] = args.profile
    return _finish(result, args)


def _cmd_merge(args) -> int:
    from phyx.tools.bench.merge import load, table

    check_out_path(args.out)
    try:
        text = table(load(args.files))
    except ValueError as e:  # not a phyx bench result, unreadable JSON
        raise CliError(str(e)) from None
    if args.out:
        from phyx.io.atomic import write_text_atomic

        write_text_atomic(args.out, text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def _cmd_plot(args) -> int:
    from phyx.tools.bench.plots import plot_file

    check_out_path(args.out, "dir")
    seen = {}
    for path in args.files:
        written = plot_file(path, args.out)
        if not written:
            print(f"{path}: nothing to plot (no attention, fused, models or multi-GPU numbers)",
                  file=sys.stderr)
        for png in written:
            if png in seen:  # same file name from another directory: the later one won
                print(f"warning: {png} of {path} replaced the one of {seen[png]}", file=sys.stderr)
            seen[png] = path
            print(png)
    return 0


def _common(p):
    add_backend_args(p)
    p.add_argument("--out", default=None, metavar="PATH", help="write the JSON result here (atomically)")
    p.add_argument("--json", action="store_true", help="print the JSON result on stdout")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--quick", action="store_true", help="tiny shapes: checks the harness, not speed")


def register(sub) -> None:
    pb = sub.add_parser("bench", help="op and model-step benchmarks; merge results across "
                                      "machines; plot them")
    bs = pb.add_subparsers(dest="bench_cmd", required=True)

    po = bs.add_parser("ops", help="attention TFLOP/s, fused ops GB/s, device ceilings, dispatch overhead")
    _common(po)
    po.add_argument("--sections", default=None, help="comma list of " + ",".join(SECTIONS))
    po.add_argument("--shapes", default=None, help="comma list of attention shape names")
    po.add_argument("--profile", default=None, metavar="DIR",
                    help="record a profiler trace into DIR (torch_npu.profiler on the NPU, "
                         "torch.profiler elsewhere)")
    po.set_defaults(func=_cmd_ops)

    pm = bs.add_parser("models", help="DiT step time, MFU and peak memory, against diffusers")
    _common(pm)
    pm.add_argument("--models", default=None, help="comma list (default: all available)")
    pm.add_argument("--modes", default="forward,train", help="forward and/or train (fwd+bwd)")
    pm.add_argument("--no-peer", action="store_true", help="skip the diffusers comparison")
    pm.add_argument("--layers", type=positive_int, default=None,
                    help="build only the first N blocks of each model (default: all)")
    pm.add_argument("--compile", action="store_true",
                    help="torch.compile every repeated block of both implementations (regional "
                         "compilation); phyx's elementwise ops run as plain torch for inductor to fuse")
    pm.add_argument("--breakdown", action="store_true",
                    help="also profile one step: device time per kernel category and the top kernels")
    pm.add_argument("--profile", default=None, metavar="DIR",
                    help="after timing, profile one more step of each model / mode / implementation "
                         "into DIR/<case>-<mode>-<impl> (torch_npu.profiler on the NPU, torch.profiler "
                         "elsewhere)")
    pm.add_argument("--peer-attention", choices=("native", "fa4"), default="native",
                    help="diffusers' attention backend: its default 'native' (torch SDPA) or 'fa4' "
                         "(its flash_4_hub backend fed the installed flash-attn-4)")
    pm.add_argument("--peak-tflops", type=positive_float, default=None,
                    help="matmul peak for MFU (default: measured in the same run)")
    pm.set_defaults(func=_cmd_models)

    pg = bs.add_parser("merge", help="cross-machine table from JSON files of several machines")
    pg.add_argument("files", nargs="+")
    pg.add_argument("--out", default=None, help="write the markdown table here")
    pg.set_defaults(func=_cmd_merge)

    pp = bs.add_parser("plot", help="PNG plots (attention, fused ops, model steps, multi-GPU "
                                    "speed-up) from result JSON files")
    pp.add_argument("files", nargs="+", help="JSON written by bench ops / models or benchmarks/multi_gpu")
    pp.add_argument("--out", required=True, metavar="DIR", help="directory for the PNG files")
    pp.set_defaults(func=_cmd_plot)
