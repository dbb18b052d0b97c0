"""Atomic file writes, shared by checkpoints, parity artifacts and media output: write a temp
file in the target directory (same filesystem), then os.replace it onto the final name, so a
reader never sees half a file. The temp file gets the permissions a plain open() would give
(mkstemp's 0600 would otherwise leak into the result)."""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path


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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path` (same suffix); move it into place on success.
    Refuses (FileExistsError) to replace anything but a regular file: a rename onto /dev/null or
    another device node would replace the node itself."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a regular file (a device or a directory); "
                                            "refusing to replace it", str(path))
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
