"""Reading what phyx did not write itself: bounded, typed, confined.

Everything phyx reads from disk (parity manifests, config.json, checkpoint indices, camera
arrays, benchmark JSON) goes through these helpers, which:
- refuse anything that is not a regular file (FIFO, device, socket, directory; a symlink is
  followed and judged by what it points at) before opening it, and open with O_NONBLOCK so a
  FIFO swapped in at the last moment cannot hang the read;
- cap the bytes read (JSON_MAX_BYTES) and the nesting depth of JSON (JSON_MAX_DEPTH);
- confine a path named by data (a shard in an index) to its directory;
- check configuration values against the dataclass field types and ranges.
Each refusal is one line naming the file, the problem and the cap. Nothing here imports or
calls anything a file names.
"""
from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

from phyx.errors import InputError

JSON_MAX_BYTES = 64 * 1024**2     # manifests, configs, indices, benchmark results
JSON_MAX_DEPTH = 64               # nesting of JSON objects and arrays
NPY_MAX_BYTES = 64 * 1024**2      # camera arrays (intrinsics.npy, poses.npy)
CONFIG_MAX_INT = 1 << 24          # any size or count in a model config
CONFIG_MAX_STR = 256


def _mib(n: int) -> str:
    return f"{n / 1024**2:.0f} MiB" if n >= 1024**2 else f"{n} bytes"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO (named pipe)"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "non-regular file"


def file_kind(path) -> str | None:
    """'regular file', another kind's name, or None when nothing is there (symlinks followed)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return "regular file" if stat.S_ISREG(st.st_mode) else _kind(st.st_mode)


def regular_file(path, what: str, error=InputError, max_bytes: int | None = None) -> os.stat_result:
    """stat `path` (following symlinks); refuse a missing, non-regular or oversized file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} {path} not found") from None
    except (OSError, ValueError) as e:
        raise error(f"{what} {path} cannot be read: {e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path} is a {_kind(st.st_mode)}, not a regular file; phyx reads "
                    f"only regular files") from None
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"{what} {path} is {st.st_size} bytes, over phyx's {_mib(max_bytes)} cap for "
                    f"a {what}") from None
    return st


def read_bytes(path, what: str, max_bytes: int, error=InputError) -> bytes:
    """At most `max_bytes` of a regular file (checked before and after opening)."""
    regular_file(path, what, error, max_bytes)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise error(f"{what} {path} cannot be opened: {e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped between stat and open
            raise error(f"{what} {path} is a {_kind(st.st_mode)}, not a regular file")
        chunks, n = [], 0
        while n <= max_bytes:
            b = os.read(fd, min(1 << 20, max_bytes + 1 - n))
            if not b:
                break
            chunks.append(b)
            n += len(b)
        if n > max_bytes:
            raise error(f"{what} {path} is over phyx's {_mib(max_bytes)} cap for it")
        return b"".join(chunks)
    except OSError as e:
        raise error(f"{what} {path} cannot be read: {e}") from None
    finally:
        os.close(fd)


def json_depth(obj, limit: int) -> int:
    """Nesting depth of a parsed JSON value (iterative; stops counting past `limit`)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (dict, list)):
            deepest = max(deepest, d)
            if d > limit:
                return d
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return deepest


def loads_json(data: bytes | str, what: str, error=InputError, max_depth: int = JSON_MAX_DEPTH,
               expect: type | None = dict):
    """Parse JSON text; refuse bad encoding, bad syntax, too deep nesting, the wrong top type."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        obj = json.loads(text)
    except RecursionError:
        raise error(f"{what}: JSON nested deeper than phyx parses (cap {max_depth} levels)") from None
    except (UnicodeDecodeError, ValueError) as e:   # JSONDecodeError is a ValueError
        raise error(f"{what}: not valid JSON ({str(e)[:200]})") from None
    if json_depth(obj, max_depth) > max_depth:
        raise error(f"{what}: JSON nested deeper than phyx's cap of {max_depth} levels")
    if expect is not None and not isinstance(obj, expect):
        raise error(f"{what}: the JSON top level is {_jtype(obj)}, expected {_jtype(expect())}")
    return obj


def read_json(path, what: str, error=InputError, max_bytes: int = JSON_MAX_BYTES,
              max_depth: int = JSON_MAX_DEPTH, expect: type | None = dict):
    """A bounded JSON file: regular file, at most `max_bytes`, at most `max_depth` deep."""
    return loads_json(read_bytes(path, what, max_bytes, error), f"{what} {path}", error, max_depth,
                      expect)


def _jtype(v) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null", int: "a number", float: "a number"}.get(type(v), type(v).__name__)


# --- paths named by data ----------------------------------------------------------------------
def _hub_blob_roots(base: Path) -> list[str]:
    """A Hugging Face hub cache keeps files in <repo>/blobs and symlinks them from
    <repo>/snapshots/<rev>/...; those blobs are part of the checkpoint, not outside it."""
    for anc in Path(os.path.abspath(base)).parents:
        if anc.name == "snapshots":
            blobs = anc.parent / "blobs"
            return [os.path.realpath(blobs)] if blobs.is_dir() else []
    return []


def inside(base, real: str) -> bool:
    roots = [os.path.realpath(base)] + _hub_blob_roots(Path(base))
    return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def file_in_dir(base, name, what: str, error=InputError, max_bytes: int | None = None) -> Path:
    """`base/name` for a file name read from data: a relative path without '..', resolving
    (symlinks followed) inside `base`, to a regular file. Anything else is refused naming it."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise error(f"{what} {name!r}: not a file name")
    p = Path(name)
    if p.is_absolute() or ".." in p.parts or name.startswith("~"):
        raise error(f"{what} {name!r} leaves the directory {base}; entries must name files inside it")
    full = Path(base) / p
    real = os.path.realpath(full)
    if not inside(base, real):
        raise error(f"{what} {name!r} resolves to {real}, outside {base}; phyx reads only files "
                    f"inside the directory")
    regular_file(full, what, error, max_bytes)
    return full


# --- typed configuration values ---------------------------------------------------------------
def check_value(name: str, value, ann: str, what: str, error=InputError,
                max_int: int = CONFIG_MAX_INT, min_int: int = 1):
    """Check one JSON value against a field annotation string ('int', 'float | None',
    'tuple[int, int, int]', 'dict', 'bool', 'str'); raise `error` naming the field."""
    alts = [a.strip() for a in ann.split("|")]
    if value is None:
        if "None" in alts:
            return
        raise error(f"{what}: {name} is null, expected {alts[0]}")
    base = alts[0]
    bad = f"{what}: {name} = {_short(value)} ({_jtype(value)})"
    if base == "bool":
        if not isinstance(value, bool):
            raise error(f"{bad}, expected true or false")
    elif base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise error(f"{bad}, expected a whole number")
        if not min_int <= value <= max_int:
            raise error(f"{what}: {name} = {_short(value)} is out of range [{min_int}, {max_int}]")
    elif base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise error(f"{bad}, expected a number")
        if not math.isfinite(value) or abs(value) > 1e15:
            raise error(f"{what}: {name} = {_short(value)} is not a finite number of sane size")
    elif base == "str":
        if not isinstance(value, str) or len(value) > CONFIG_MAX_STR:
            raise error(f"{bad}, expected a string of at most {CONFIG_MAX_STR} characters")
    elif base == "dict":
        if not isinstance(value, dict):
            raise error(f"{bad}, expected an object")
    elif base.startswith("tuple["):
        inner = [a.strip() for a in base[6:-1].split(",")]
        if not isinstance(value, (list, tuple)) or len(value) != len(inner):
            raise error(f"{bad}, expected a list of {len(inner)} {inner[0]} values")
        for i, (v, a) in enumerate(zip(value, inner)):
            check_value(f"{name}[{i}]", v, a, what, error, max_int, min_int)


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def check_fields(cls, d: dict, what: str, error=InputError, skip=(), min_int: dict | None = None,
                 max_int: int = CONFIG_MAX_INT) -> None:
    """Check every key of `d` that names a field of dataclass `cls` against its annotation."""
    import dataclasses

    if not isinstance(d, dict):
        raise error(f"{what}: expected an object of fields, got {_jtype(d)}")
    anns = {f.name: f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            for f in dataclasses.fields(cls)}
    for k, v in d.items():
        if k in anns and k not in skip:
            check_value(k, v, str(anns[k]), what, error, max_int, (min_int or {}).get(k, 1))


def max_param_bytes() -> int:
    """Cap on the parameter memory of a model built from a config read from disk:
    PHYX_MAX_MODEL_BYTES, default this host's physical memory (at most 1 TiB)."""
    v = os.environ.get("PHYX_MAX_MODEL_BYTES")
    if v:
        try:
            return int(v)
        except ValueError:
            raise InputError(f"PHYX_MAX_MODEL_BYTES={v!r} is not a whole number of bytes") from None
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        ram = 0
    return min(1 << 40, ram) if ram > 0 else 1 << 40


def check_param_memory(params: int, what: str, error=InputError, bytes_per_param: int = 2) -> None:
    """Refuse a config whose parameters alone (at `bytes_per_param`, default 2: bf16, the
    smallest dtype phyx builds in) would not fit under max_param_bytes()."""
    cap = max_param_bytes()
    need = int(params) * bytes_per_param
    if need > cap:
        raise error(f"{what} describes ~{params:.3g} parameters ({need / 1024**3:.3g} GiB at "
                    f"{bytes_per_param} bytes each), over the {cap / 1024**3:.3g} GiB cap (this "
                    f"host's memory; PHYX_MAX_MODEL_BYTES overrides): check its sizes")
