"""`phyx generate`: one command for every model, task, backend and parallel layout.

    phyx generate --model tiny-wan --out out/tiny.mp4
    torchrun --nproc_per_node 2 -m phyx.cli generate --model tiny-wan --cfg 2 --out out/cfg2.mp4

The options are GenerateArgs' fields (phyx/pipelines/generate.py): defaults and help live there.
Every input is checked before any model work; an existing output is replaced only with
--overwrite, and only if phyx wrote it.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from phyx.cli._common import dtype_arg

_TYPES = {"int": int, "float": float, "str": str}


def _quiet_libraries() -> None:
    """transformers / diffusers progress bars and hints are noise next to our own bar."""
    import warnings

    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:
        pass
    try:
        import diffusers

        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
    except Exception:
        pass
    warnings.filterwarnings("ignore", message=".*low_cpu_mem_usage.*")
    warnings.filterwarnings("ignore", message=".*weight_norm.*is deprecated.*")


def add_generate_args(p: argparse.ArgumentParser) -> None:
    """One option per GenerateArgs field (type from the annotation, help / choices from metadata)."""
    from phyx.pipelines.generate import GenerateArgs

    for f in dataclasses.fields(GenerateArgs):
        meta = dict(f.metadata)
        if not meta.get("cli", True):
            continue
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        kw = {"dest": f.name, "default": f.default, "help": meta.get("help", "")}
        base = str(f.type).split("|")[0].strip()
        if base == "bool":
            kw["action"] = meta.get("action", "store_true")
        else:
            kw["type"] = dtype_arg if f.name == "dtype" else _TYPES[base]
            for k in ("choices", "metavar"):
                if k in meta:
                    kw[k] = meta[k]
        if f.default not in (None, False, True, "") and "help" in kw:
            kw["help"] += f" [default: {f.default}]"
        p.add_argument(flag, **kw)


def _cmd_generate(args) -> int:
    from phyx.pipelines import registry
    from phyx.pipelines.generate import GenerateArgs, generate

    if args.list_models:
        for name in registry.names():
            s = registry.SPECS[name]
            print(f"{name:<26} {'/'.join(s.tasks):<10} {s.description}")
        return 0
    _quiet_libraries()
    kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(GenerateArgs) if f.metadata.get("cli", True)}
    try:
        result = generate(GenerateArgs(**kw))
    finally:
        # Under torchrun: tear the process group down before the interpreter exits; left to the
        # exit handlers, its threads were occasionally destroyed while joinable (SIGABRT).
        from phyx import comm
        comm.destroy()
    if result["out"] is not None:
        rec = result["record"]
        st, t = rec["settings"], rec["timings"]
        # with --json, stdout carries the record alone
        print(f"wrote {result['out']} ({st['frames']} frames {st['height']}x{st['width']}, {rec['task']}, "
              f"backend {rec['backend']['name']}, {t['total_s']:.1f} s) and {result['sidecar']}",
              file=sys.stderr if args.json else sys.stdout)
        if args.json:
            from phyx.cli._common import print_json

            print_json(rec)
    return 0


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate a video / image (+ sound) with a world model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_generate_args(p)
    p.add_argument("--json", action="store_true", help="print the sidecar record as JSON on stdout")
    p.add_argument("--list-models", action="store_true", help="list model names and exit")
    p.set_defaults(func=_cmd_generate)


if __name__ == "__main__":
    from phyx.cli import main

    sys.exit(main(["generate", *sys.argv[1:]]))
