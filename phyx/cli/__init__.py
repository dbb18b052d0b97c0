"""`phyx` command line."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="phyx", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    _register_subcommands(sub)
    return p


# one module per subcommand, each with register(subparsers)
SUBCOMMANDS = ("info", "generate", "parity", "bench", "port", "parallel", "convert", "certify")


def _register_subcommands(sub) -> None:
    import importlib

    for mod in (f"phyx.cli.{name}" for name in SUBCOMMANDS):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and (e.name == mod or mod.startswith(e.name + ".")):
                continue
            raise
        m.register(sub)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as e:  # clear one-line errors for phyx's own error types
        from phyx.errors import PhyxError

        if isinstance(e, PhyxError):
            print(f"phyx: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
