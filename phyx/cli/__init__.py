"""`phyx` command line.

Exit codes: 0 ok, 1 a check or verdict failed, 2 usage or environment error (one
`phyx: error: ...` line on stderr, never a traceback). `--json` prints JSON on stdout; `--out PATH`
names the file or folder a command writes. See phyx/cli/_common.py.
"""
from __future__ import annotations

import argparse
import errno
import io
import os
import sys

from phyx.cli._common import EXIT_USAGE, CliError, Parser

# one module per subcommand, each with register(subparsers)
SUBCOMMANDS = ("info", "generate", "parity", "bench", "port", "parallel", "convert", "certify")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="phyx", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    _register_subcommands(sub)
    return p


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


def _error(msg: str) -> int:
    print(f"phyx: error: {msg}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def _os_error(e: OSError) -> str:
    what = e.strerror or str(e)
    where = f" {e.filename}" if e.filename else ""
    fix = {errno.ENOSPC: "free some space or write elsewhere (--out)",
           errno.EROFS: "the filesystem is read-only: write elsewhere (--out)",
           errno.EACCES: "no permission: write elsewhere (--out) or fix the permissions",
           errno.ENOTDIR: "a parent of the path is a file, not a directory: choose another path",
           errno.EISDIR: "the path is a directory: give a file name",
           errno.ENOENT: "check the path"}.get(e.errno, "check the path and the device")
    return f"cannot read or write{where}: {what}; {fix}"


def _one_line(msg: str) -> str:
    """A multi-line library message (e.g. the missing checkpoint parts) as one line."""
    return "; ".join(ln.strip() for ln in msg.splitlines() if ln.strip()).replace(":; ", ": ")


def _stdout_failed(e: OSError, stream) -> int:
    # stdout is gone or full (`> /dev/full`, a closed pipe): say so once, then point fd 1 at
    # /dev/null so the interpreter's own flush at exit does not print a second error
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, stream.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass
    if isinstance(e, BrokenPipeError):
        return EXIT_USAGE
    return _error(f"cannot write to standard output: {e.strerror or e}; redirect it elsewhere")


class _StdoutError(Exception):
    def __init__(self, err: OSError):
        super().__init__(str(err))
        self.err = err


class _GuardedStdout:
    """sys.stdout, with a failed write or flush (full device, closed pipe) told apart from the
    OSErrors of the files a command writes."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError as e:
            raise _StdoutError(e) from None

    def flush(self):
        try:
            return self._stream.flush()
        except OSError as e:
            raise _StdoutError(e) from None
        except ValueError:  # closed
            return None

    def __getattr__(self, name):
        return getattr(self._stream, name)


def main(argv=None) -> int:
    from phyx.errors import PhyxError

    real_stdout = sys.stdout
    sys.stdout = _GuardedStdout(real_stdout)
    try:
        from phyx.cli._common import check_env, flush_notes

        flush_notes(show=False)
        args = build_parser().parse_args(argv)
        check_env()
        code = int(args.func(args) or 0)
        sys.stdout.flush()
        flush_notes()
        return code
    except _StdoutError as e:
        return _stdout_failed(e.err, real_stdout)
    except CliError as e:
        if e.code == EXIT_USAGE:
            return _error(str(e))
        print(f"phyx: {e}", file=sys.stderr, flush=True)
        return e.code
    except PhyxError as e:
        return _error(_one_line(str(e)))
    except OSError as e:
        return _error(_os_error(e))
    except KeyboardInterrupt:
        return _error("interrupted")
    finally:
        if isinstance(sys.stdout, _GuardedStdout):
            sys.stdout = real_stdout


if __name__ == "__main__":
    sys.exit(main())
