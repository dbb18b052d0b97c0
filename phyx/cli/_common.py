"""The vocabulary every `phyx` subcommand shares.

- `--backend NAME` / `--backends A,B` and `--policy reference|fast`: `add_backend_args`,
  applied by `setup_backend`;
- one dtype spelling: `fp32|bf16|fp16` or the long names `float32|bfloat16|float16`
  (`dtype_arg`, `dtype_list_arg`), normalised to the short name;
- `--json` prints JSON on stdout; `--out PATH` names the file or folder written;
- exit codes: 0 ok, 1 a check / verdict failed, 2 usage or environment error. Every usage or
  environment error is one `CliError` (or a `PhyxError`), printed as one `phyx: error: ...` line.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

POLICIES = ("reference", "fast")
DTYPE_ALIASES = {"fp32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16",
                 "fp16": "fp16", "float16": "fp16"}
DTYPE_CHOICES = "fp32|bf16|fp16 (or float32|bfloat16|float16)"


class CliError(Exception):
    """A usage or environment error (exit 2), or with code=1 a failed check. The message names
    the fix; the CLI prints it as one `phyx: error: ...` line, never a traceback."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: `phyx: error: <what> (see `phyx <cmd> --help`)`."""

    def error(self, message):  # argparse calls this for every usage error
        raise CliError(f"{message} (see `{self.prog} --help`)")


# ---- argument types --------------------------------------------------------------------------

def dtype_arg(text: str) -> str:
    key = str(text).strip().lower()
    if key not in DTYPE_ALIASES:
        raise argparse.ArgumentTypeError(f"unknown dtype {text!r}; use {DTYPE_CHOICES}")
    return DTYPE_ALIASES[key]


def dtype_list_arg(text: str) -> list[str]:
    items = [x.strip() for x in str(text).split(",") if x.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"give at least one dtype: {DTYPE_CHOICES}")
    return [dtype_arg(x) for x in items]


def torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_arg(name)]


def _number(kind, text, *, lo=None, lo_ok=True, what="a number"):
    try:
        v = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    if lo is not None and (v < lo or (v == lo and not lo_ok)):
        raise argparse.ArgumentTypeError(f"{text!r} must be {'>=' if lo_ok else '>'} {lo}")
    return v


def positive_int(text) -> int:
    return _number(int, text, lo=1, what="an integer")


def nonneg_int(text) -> int:
    return _number(int, text, lo=0, what="an integer")


def finite_float(text) -> float:
    return _number(float, text)


def positive_float(text) -> float:
    return _number(float, text, lo=0.0, lo_ok=False)


def nonneg_float(text) -> float:
    return _number(float, text, lo=0.0)


def csv_list(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def choice_list(text: str, allowed, what: str) -> list[str]:
    """A comma list whose every item must be in `allowed` (else a CliError naming them)."""
    items = csv_list(text) or []
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise CliError(f"{what} {text!r}: {'unknown ' + ', '.join(map(repr, bad)) if bad else 'empty'}; "
                       f"choose from {','.join(allowed)}")
    return items


# ---- backend ---------------------------------------------------------------------------------

def add_backend_args(p: argparse.ArgumentParser, multi: bool = False, policy_default=None) -> None:
    """--backend NAME (or with multi=True --backends A,B) and --policy reference|fast."""
    if multi:
        p.add_argument("--backends", default=None, metavar="A,B",
                       help="comma list of backends (see `phyx info`); default: every one available here")
    else:
        p.add_argument("--backend", default=None,
                       help="cpu, cuda, npu, npu-emulated, ... (default: env PHYX_BACKEND, else autodetect)")
    p.add_argument("--policy", default=policy_default, choices=POLICIES,
                   help="kernel policy: reference (plain torch) or fast (vendor kernels)"
                        + (f"; default {policy_default}" if policy_default else ""))


def known_backends() -> list[str]:
    import phyx.backend

    return sorted(phyx.backend.registered_backends())


def check_backend_names(names, flag: str = "--backends") -> list[str]:
    known = known_backends()
    bad = [n for n in names if n not in known]
    if bad:
        raise CliError(f"{flag}: unknown backend {', '.join(map(repr, bad))}; known: {', '.join(known)}")
    return list(names)


def setup_backend(args, reason: str | None = None):
    """Apply --backend / --policy; returns the active backend."""
    import phyx

    backend = getattr(args, "backend", None)
    policy = getattr(args, "policy", None)
    if backend:
        check_backend_names([backend], "--backend")
        phyx.set_backend(backend, policy, _reason=reason or f"phyx --backend {backend}")
    else:
        phyx.get_backend()
        if policy:
            phyx.set_policy(policy)
    return phyx.get_backend()


# ---- environment -----------------------------------------------------------------------------

def _env_number(name: str, kind, lo, lo_ok: bool, what: str) -> None:
    v = os.environ.get(name)
    if v is None or v == "":
        return
    try:
        x = kind(v)
        ok = math.isfinite(x) and (x > lo or (lo_ok and x == lo))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise CliError(f"environment variable {name}={v!r} is not {what}; fix or unset it")


def check_env() -> None:
    """Refuse malformed environment switches up front (one line each) instead of deep inside."""
    _env_number("WORLD_SIZE", int, 1, True, "a positive integer (torchrun sets it)")
    _env_number("RANK", int, 0, True, "a non-negative integer (torchrun sets it)")
    _env_number("LOCAL_RANK", int, 0, True, "a non-negative integer (torchrun sets it)")
    _env_number("PHYX_DIST_TIMEOUT_S", float, 0.0, False, "a positive number of seconds")
    _env_number("HCCL_BUFFSIZE", float, 0.0, False, "a positive size in MB")
    pol = os.environ.get("PHYX_POLICY")
    if pol and pol not in POLICIES:
        raise CliError(f"environment variable PHYX_POLICY={pol!r} is not one of {', '.join(POLICIES)}")


# ---- memory ----------------------------------------------------------------------------------

def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PiB"


def host_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(estimate_bytes: float, what: str, fix: str) -> None:
    """Refuse before allocating when `what` alone needs more than this machine's memory."""
    total = host_memory_bytes()
    if total and estimate_bytes > total:
        raise CliError(f"{what} needs about {human_bytes(estimate_bytes)}, more than this machine's "
                       f"{human_bytes(total)} of memory; {fix}")


# ---- output ----------------------------------------------------------------------------------

def check_out_path(path: str | None, kind: str = "file", flag: str = "--out",
                   overwrite: bool | None = None) -> None:
    """Before any work: `path` can be written as a `kind` ('file' or 'dir'): not a device or
    special file, a file not a directory (and the reverse), its parents a writable directory.
    With `overwrite` given (a command that has --overwrite), an existing file is replaced only
    when it is True."""
    import stat

    if not path:
        return
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except NotADirectoryError:
        mode = None
    except OSError as e:
        raise CliError(f"{flag} {path}: {e.strerror}") from None
    if mode is not None:
        if kind == "file" and stat.S_ISDIR(mode):
            raise CliError(f"{flag} {path} is a directory; give a file name")
        if kind == "dir" and not stat.S_ISDIR(mode):
            raise CliError(f"{flag} {path} exists and is not a directory; give a folder")
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            raise CliError(f"{flag} {path} is a device or special file; give a file path")
        if kind == "file" and overwrite is False:
            raise CliError(f"{flag} {path} exists; pass --overwrite to replace it, or choose another path")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise CliError(f"{flag} {path}: {parent} is a file, not a directory; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CliError(f"{flag} {path}: {parent} is not writable; choose another path")


_NOTES: list[str] = []


def deprecated(old: str, new: str) -> None:
    """Note an old spelling; printed once the command has run (an error stays one line)."""
    _NOTES.append(f"phyx: note: {old} is deprecated; use {new}")


def flush_notes(show: bool = True) -> None:
    for n in _NOTES if show else ():
        print(n, file=sys.stderr)
    _NOTES.clear()


def print_json(obj) -> None:
    import json

    print(json.dumps(obj, indent=2, default=str))
