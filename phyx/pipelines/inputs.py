"""Conditioning inputs: images (and videos) to pixel tensors, default inputs for the tiny demo
(a synthetic first frame, a synthetic camera trajectory), camera directories."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from phyx.errors import PhyxError


class InputError(PhyxError, ValueError):
    """A user input (size, frame count, file, layout) that cannot work; refused before model work."""


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def load_frames(path: str | Path) -> np.ndarray:
    """[F, H, W, 3] uint8 from an image or a video file."""
    from phyx.pipelines.media import read_video

    path = Path(path)
    if not path.is_file():
        raise InputError(f"input file {path} not found")
    try:
        frames = read_video(path)
    except Exception as e:
        raise InputError(f"cannot read {path} as an image or video ({type(e).__name__}: {e})") from e
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise InputError(f"{path}: expected RGB frames, got array of shape {frames.shape}")
    return frames


def to_pixels(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 [F, H0, W0, 3] -> float [3, F, height, width] in [-1, 1]: resized to cover the target
    (aspect kept) and centre-cropped, bicubic with antialiasing."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1
    h0, w0 = x.shape[-2:]
    s = max(height / h0, width / w0)
    nh, nw = max(height, math.ceil(h0 * s)), max(width, math.ceil(w0 * s))
    if (nh, nw) != (h0, w0):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    top, left = (nh - height) // 2, (nw - width) // 2
    x = x[:, :, top:top + height, left:left + width].clamp(-1, 1)
    return x.permute(1, 0, 2, 3).contiguous()


def synthetic_image(height: int, width: int) -> np.ndarray:
    """A deterministic first frame for the tiny demo: colour gradients and a disc. [1, H, W, 3]."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = x / max(width - 1, 1)
    g = y / max(height - 1, 1)
    disc = ((x - width * 0.6) ** 2 + (y - height * 0.45) ** 2) < (min(height, width) * 0.22) ** 2
    b = np.where(disc, 1.0, 0.25)
    img = np.stack([r, g, b], -1)
    return (img * 255).round().astype(np.uint8)[None]


def synthetic_camera(num_poses: int) -> tuple[np.ndarray, np.ndarray]:
    """A forward dolly with a slow yaw (OpenCV c2w), intrinsics for LingBot's 480x832 calibration."""
    K = np.tile(np.array([[500.0, 500.0, 416.0, 240.0]], dtype=np.float32), (num_poses, 1))
    P = np.tile(np.eye(4, dtype=np.float32), (num_poses, 1, 1))
    for i in range(num_poses):
        a = 0.01 * i
        P[i, :3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
        P[i, :3, 3] = [0.0, 0.0, 0.05 * i]
    return K, P


def load_camera(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(intrinsics [N, 4], poses [N, 4, 4]) from a camera directory, shapes and rigidity checked."""
    from phyx.models.wan.camera import CameraInputError, load_camera_dir

    path = Path(path)
    if not path.is_dir():
        raise InputError(f"--camera {path} is not a directory (expected intrinsics.npy [N, 4] and "
                         f"poses.npy [N, 4, 4], as in LingBot-World's examples)")
    try:
        K, P = load_camera_dir(path)
    except CameraInputError as e:
        raise InputError(str(e)) from e
    if K.shape[0] != P.shape[0]:
        raise InputError(f"{path}: intrinsics has {K.shape[0]} rows but poses has {P.shape[0]} frames; "
                         f"they must describe the same frames")
    return K, P
