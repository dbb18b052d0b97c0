"""Checks that run before any model work, each with a message that names the problem and the fix."""
from __future__ import annotations

import json
import math
import os
import shutil
import stat
import tempfile
from pathlib import Path

from phyx.errors import CheckpointError, ParallelConfigError
from phyx.pipelines.inputs import IMAGE_SUFFIXES, InputError

VIDEO_SUFFIXES = (".mp4",)


def check_frames(frames: int, t_stride: int, task: str) -> None:
    if task == "t2i":
        if frames != 1:
            raise InputError(f"text-to-image makes one frame; got --frames {frames}")
        return
    if frames < 1 or (frames - 1) % t_stride:
        lo = max(1, (frames - 1) // t_stride * t_stride + 1)
        raise InputError(f"frame count {frames} is not {t_stride}n+1 (the VAE compresses time by {t_stride} "
                         f"after the first frame); use {lo} or {lo + t_stride}")


def check_size(height: int, width: int, s_stride: int, patch: tuple[int, int, int]) -> None:
    mh, mw = s_stride * patch[1], s_stride * patch[2]
    bad = [(n, v, m) for n, v, m in (("height", height, mh), ("width", width, mw)) if v < m or v % m]
    if bad:
        fixes = ", ".join(f"{n} {v} -> {max(m, round(v / m) * m)}" for n, v, m in bad)
        raise InputError(f"size {height}x{width} must be a multiple of the VAE stride ({s_stride}) times "
                         f"the DiT patch ({patch[1]}x{patch[2]}) = {mh}x{mw}: {fixes}")


def check_world(cfg: int, sp: int, tp: int, ring: int = 1) -> int:
    for n, v in (("cfg", cfg), ("sp", sp), ("tp", tp), ("ring", ring)):
        if v < 1:
            raise ParallelConfigError(f"--{n} must be >= 1, got {v}")
    if sp % ring:
        raise ParallelConfigError(f"--ring {ring} must divide --sp {sp} (sp = ulysses x ring); e.g. "
                                  f"--sp {ring * max(1, sp // ring)} --ring {ring}")
    if cfg > 2:
        raise ParallelConfigError(f"--cfg must be 1 or 2 (conditional and unconditional branch), got {cfg}")
    want = cfg * sp * tp
    env = os.environ.get("WORLD_SIZE")
    try:
        world = int(env) if env else 1
    except ValueError:
        raise ParallelConfigError(f"environment variable WORLD_SIZE={env!r} is not an integer; launch "
                                  f"with torchrun, which sets it") from None
    if world != want:
        how = (f"launch with: torchrun --nproc_per_node {want} -m phyx.cli generate ..." if want > 1
               else "drop --cfg/--sp/--tp or set them so that their product is the number of ranks")
        raise ParallelConfigError(f"world size {world} is not cfg x sp x tp = {cfg} x {sp} x {tp} = {want}; {how}")
    return world


def check_checkpoint(parts: list[tuple[Path, str]]) -> None:
    missing = []
    for path, what in parts:
        if not path.is_dir() or not any(path.iterdir()):
            missing.append(f"  {path}  ({what})")
    if missing:
        raise CheckpointError("checkpoint is missing parts:\n" + "\n".join(missing) +
                              "\nDownload them, or convert official .pth files with `phyx convert`.")


def check_output(out: str | Path, task: str) -> Path:
    """The output name fits the task (.mp4, or an image suffix for t2i). Whether it can be
    written is check_writable's job."""
    out = Path(out)
    suffix = out.suffix.lower()
    ok = VIDEO_SUFFIXES + (IMAGE_SUFFIXES if task == "t2i" else ())
    if suffix not in ok:
        raise InputError(f"--out {out}: the output must end in one of {', '.join(ok)} for task {task}")
    return out


def is_phyx_sidecar(path: Path) -> bool:
    """A JSON sidecar phyx wrote (pipelines/sidecar.py): the mark that its output may be replaced."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(rec, dict) and {"model", "settings", "output"} <= rec.keys()


def check_targets(out: Path, targets: list[Path], overwrite: bool) -> None:
    """Refuse to replace anything but a regular file of an earlier phyx run (recognised by its
    sidecar, OUT.json), and even that only with --overwrite."""
    from phyx.pipelines.sidecar import sidecar_path

    existing = []
    for t in targets:
        try:
            st = os.stat(t)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise InputError(f"--out {out}: cannot check {t}: {e.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"--out {out}: {t} is an existing directory; give a file name")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"--out {out}: {t} is a device or special file, not a regular file; "
                             f"give a file path")
        existing.append(t)
    if not existing:
        return
    names = ", ".join(str(t) for t in existing)
    if not overwrite:
        raise InputError(f"--out {out}: {names} already exists; pass --overwrite to replace it, or choose "
                         f"another --out")
    if not is_phyx_sidecar(sidecar_path(out)):
        raise InputError(f"--out {out}: {names} exists and was not written by phyx (no phyx sidecar "
                         f"{sidecar_path(out).name}); --overwrite replaces only phyx outputs: remove it "
                         f"yourself or choose another --out")


def check_writable(out: Path, need_bytes: int = 0) -> None:
    """The directory of `out` exists or can be made, accepts a new file, and has room."""
    parent = out.parent if str(out.parent) else Path(".")
    probe = parent
    while not probe.exists():
        if probe.is_symlink():  # a dangling link among the parents
            raise InputError(f"--out {out}: {probe} is a broken symbolic link")
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"--out {out}: {probe} is a file, not a directory; choose another path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".phyx-write-check.", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise InputError(f"--out {out}: cannot write in {probe} ({e.strerror}); choose a writable "
                         f"location") from None
    if need_bytes:
        free = shutil.disk_usage(probe).free
        if free < need_bytes:
            raise InputError(f"--out {out}: {probe} has {free} bytes free, the output needs about "
                             f"{need_bytes}; free some space or write elsewhere")


def check_writer(out: Path) -> None:
    """The library that writes `out` is here (mp4: imageio + an ffmpeg executable)."""
    try:
        import imageio.v2  # noqa: F401
    except ImportError:
        raise InputError("writing images and videos needs imageio: pip install -e '.[media]'") from None
    if out.suffix.lower() in VIDEO_SUFFIXES:
        from phyx.pipelines.media import ffmpeg_exe

        ffmpeg_exe()


def check_finite(name: str, value, *, positive: bool = False, nonneg: bool = False) -> None:
    if value is None:
        return
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"--{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise InputError(f"--{name} must be a finite number, got {value}")
    if positive and not v > 0:
        raise InputError(f"--{name} must be > 0, got {value}")
    if nonneg and v < 0:
        raise InputError(f"--{name} must be >= 0, got {value}")


def check_int(name: str, value, lo: int, hi: int | None = None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"--{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise InputError(f"--{name} must be {rng}, got {value}")


def check_choice(name: str, value, choices) -> None:
    if value is not None and value not in choices:
        raise InputError(f"--{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def check_image_input(task: str, image: str | None, allow_default: bool) -> None:
    if task in ("i2v", "v2w") and image is None and not allow_default:
        raise InputError(f"task {task} needs a conditioning image or video: pass --image FILE")
    if task in ("t2v", "t2i", "t2av") and image is not None:
        raise InputError(f"--image given but task is {task}; use an image-conditioned task (i2v / v2w)")
    if image is not None and not Path(image).is_file():
        raise InputError(f"--image {image} not found")
