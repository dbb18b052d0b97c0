"""Writing results: mp4 (imageio + imageio-ffmpeg), png for single images, wav for sound (the
standard library's wave module, 16-bit PCM). Every file is written to a temporary name in the
target directory and moved into place with os.replace, so a reader never sees half a file."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import torch

from phyx.io.atomic import atomic_path


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """[3, F, H, W] in [-1, 1] -> [F, H, W, 3] uint8 (round half up, as diffusers' processor)."""
    if video.dim() != 4 or video.shape[0] != 3:
        raise ValueError(f"expected a video [3, F, H, W], got {tuple(video.shape)}")
    x = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def write_video(frames: np.ndarray, path: str | Path, fps: float) -> Path:
    import imageio.v2 as imageio

    path = Path(path)
    with atomic_path(path) as tmp:
        # macro_block_size=1: never let imageio resize the frames behind our back
        with imageio.get_writer(str(tmp), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                quality=8, macro_block_size=1, pixelformat="yuv420p") as w:
            for f in frames:
                w.append_data(f)
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
