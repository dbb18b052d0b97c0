"""Atomic file writes, shared by checkpoints, parity artifacts and media output: write a temp
file in the target directory (same filesystem), then os.replace it onto the final name, so a
reader never sees half a file. The temp file gets the permissions a plain open() would give
(mkstemp's 0600 would otherwise leak into the result).

Only a regular file (or nothing) is ever replaced: a rename onto a device node, FIFO, socket or
directory would destroy it (`--json /dev/null` as root would replace the device), so such a
target is refused with an OutputError naming it. A symbolic link is replaced as a link, its
target left alone."""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from phyx.errors import OutputError


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _default_mode() -> int:
    return 0o666 & ~_umask()


def publish_dir(tmp_dir: str | os.PathLike) -> None:
    """Give a directory built with tempfile.mkdtemp (0700, files maybe 0600) the permissions a
    plain mkdir / open would have given, before it is renamed into place."""
    umask = _umask()
    os.chmod(tmp_dir, 0o777 & ~umask)
    for name in os.listdir(tmp_dir):
        f = os.path.join(tmp_dir, name)
        if os.path.isfile(f):
            os.chmod(f, 0o666 & ~umask)


def check_replaceable(path: str | os.PathLike) -> None:
    """Refuse (OutputError) a target that exists and is not a regular file or a symlink."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e}") from None
    if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
        return
    from phyx.io.untrusted import _kind

    raise OutputError(f"{path} is a {_kind(st.st_mode)}; phyx writes only regular files (it "
                      f"would replace it): choose a file path")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path` (same suffix); move it into place on success."""
    path = Path(path)
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))
