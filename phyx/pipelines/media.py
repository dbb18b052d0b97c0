"""Writing results: mp4 (the ffmpeg executable of imageio-ffmpeg, fed raw frames; its exit status
is checked), png for single images (imageio), wav for sound (the standard library's wave module,
16-bit PCM). Every file is written to a temporary name in the target directory and moved into
place with os.replace only once it is complete, so a reader never sees half a file and a failed
encode never lands at the final path. A path that exists and is not a regular file (a device, a
directory) is refused, never replaced."""
from __future__ import annotations

import os
import stat
import subprocess
import wave
from pathlib import Path

import numpy as np
import torch

from phyx.io import atomic
from phyx.pipelines.inputs import InputError


class MediaError(InputError):
    """An output could not be written (the encoder failed, no encoder, not a regular file)."""


def _regular_target(path: Path) -> Path:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return path
    if not stat.S_ISREG(mode):
        raise MediaError(f"{path} exists and is not a regular file (a directory or a device); "
                         f"give a file path")
    return path


def atomic_path(path):
    """phyx.io.atomic.atomic_path, refusing to replace anything but a regular file."""
    return atomic.atomic_path(_regular_target(Path(path)))


def ffmpeg_exe() -> str:
    """The ffmpeg executable imageio-ffmpeg provides (or IMAGEIO_FFMPEG_EXE names)."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise MediaError("writing .mp4 needs imageio-ffmpeg: pip install -e '.[media]' (or, for "
                         "text-to-image, a .png --out)") from None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as e:  # RuntimeError: no binary for this platform, a bad IMAGEIO_FFMPEG_EXE
        raise MediaError(f"no ffmpeg executable for writing .mp4 ({e}); install imageio-ffmpeg or "
                         f"set IMAGEIO_FFMPEG_EXE") from None


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """[3, F, H, W] in [-1, 1] -> [F, H, W, 3] uint8 (round half up, as diffusers' processor)."""
    if video.dim() != 4 or video.shape[0] != 3:
        raise ValueError(f"expected a video [3, F, H, W], got {tuple(video.shape)}")
    x = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def write_video(frames: np.ndarray, path: str | Path, fps: float) -> Path:
    """[F, H, W, 3] uint8 -> H.264 mp4 (yuv420p, crf 10; frames never resized)."""
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"expected frames [F, H, W, 3] uint8, got {frames.shape}")
    f, h, w, _ = frames.shape
    path = Path(path)
    exe = ffmpeg_exe()
    with atomic_path(path) as tmp:
        cmd = [exe, "-y", "-loglevel", "error", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{w}x{h}",
               "-pix_fmt", "rgb24", "-r", f"{float(fps):.6g}", "-i", "-", "-an", "-vcodec", "libx264",
               "-pix_fmt", "yuv420p", "-crf", "10", "-f", "mp4", str(tmp)]
        try:
            r = subprocess.run(cmd, input=frames.tobytes(), capture_output=True, timeout=3600)
        except OSError as e:
            raise MediaError(f"could not run ffmpeg ({exe}): {e.strerror or e}") from None
        err = r.stderr.decode("utf-8", "replace").strip().splitlines()
        if r.returncode != 0 or not tmp.exists() or tmp.stat().st_size == 0:
            raise MediaError(f"ffmpeg failed to encode {path} (exit {r.returncode}"
                             f"{': ' + err[-1] if err else ''}); nothing was written")
    return path


def write_image(frame: np.ndarray, path: str | Path) -> Path:
    import imageio.v2 as imageio

    path = Path(path)
    with atomic_path(path) as tmp:
        imageio.imwrite(str(tmp), frame, format=path.suffix.lstrip(".") or "png")
    return path


def write_wav(waveform: torch.Tensor, path: str | Path, sample_rate: int) -> Path:
    """waveform [channels, samples] (or [samples]) in [-1, 1] -> 16-bit PCM wav."""
    w = waveform.detach().float().cpu()
    if w.dim() == 1:
        w = w.unsqueeze(0)
    pcm = (w.clamp(-1, 1) * 32767).round().to(torch.int16).t().contiguous().numpy()  # interleaved
    path = Path(path)
    with atomic_path(path) as tmp:
        with wave.open(str(tmp), "wb") as f:
            f.setnchannels(w.shape[0])
            f.setsampwidth(2)
            f.setframerate(int(sample_rate))
            f.writeframes(pcm.tobytes())
    return path


def read_video(path: str | Path) -> np.ndarray:
    """[F, H, W, 3] uint8 (for tests and the V2W conditioning input)."""
    import imageio.v2 as imageio

    path = Path(path)
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp"):
        return np.asarray(imageio.imread(str(path)))[None, ..., :3]
    with imageio.get_reader(str(path), format="FFMPEG") as r:
        return np.stack([np.asarray(f)[..., :3] for f in r])
