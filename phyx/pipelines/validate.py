"""Checks that run before any model work, each with a message that names the problem and the fix."""
from __future__ import annotations

import os
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


def check_world(cfg: int, sp: int, tp: int) -> int:
    for n, v in (("cfg", cfg), ("sp", sp), ("tp", tp)):
        if v < 1:
            raise ParallelConfigError(f"--{n} must be >= 1, got {v}")
    if cfg > 2:
        raise ParallelConfigError(f"--cfg must be 1 or 2 (conditional and unconditional branch), got {cfg}")
    want = cfg * sp * tp
    env = os.environ.get("WORLD_SIZE")
    world = int(env) if env else 1
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
    out = Path(out)
    suffix = out.suffix.lower()
    ok = VIDEO_SUFFIXES + (IMAGE_SUFFIXES if task == "t2i" else ())
    if suffix not in ok:
        raise InputError(f"--out {out}: the output must end in one of {', '.join(ok)} for task {task}")
    if out.exists() and out.is_dir():
        raise InputError(f"--out {out} is a directory; give a file name")
    return out


def check_image_input(task: str, image: str | None, allow_default: bool) -> None:
    if task in ("i2v", "v2w") and image is None and not allow_default:
        raise InputError(f"task {task} needs a conditioning image or video: pass --image FILE")
    if task in ("t2v", "t2i", "t2av") and image is not None:
        raise InputError(f"--image given but task is {task}; use an image-conditioned task (i2v / v2w)")
    if image is not None and not Path(image).is_file():
        raise InputError(f"--image {image} not found")
