"""The JSON sidecar written next to every output: every setting, versions, backend, kernels,
parallel layout, timings and checksums, so a run can be compared with one on another machine."""
from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path

from phyx.pipelines.media import atomic_path


def sidecar_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".json")


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("phyx", "torch", "diffusers", "transformers", "safetensors", "imageio", "imageio-ffmpeg",
                "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def backend_record() -> dict:
    import phyx

    b = phyx.get_backend()
    rec = {"name": b.name, "emulated": bool(b.emulated), "policy": phyx.get_policy(),
           "why": phyx.selection_reason(), "device_type": b.device_type, "devices": b.describe_devices(),
           "versions": b.versions(), "precision_flags": b.precision_flags(),
           "kernels": phyx.ops.chosen_kernels()}
    if b.hardware_info():
        rec["hardware"] = b.hardware_info()
    return rec


def sha256_of(array) -> str:
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


class Timer:
    """Named wall-clock sections: with timer("denoise"): ..."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._t0 = time.perf_counter()

    def __call__(self, name: str):
        timer = self

        class _Section:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[name] = timer.seconds.get(name, 0.0) + time.perf_counter() - self.t
                return False
        return _Section()

    def total(self) -> float:
        return time.perf_counter() - self._t0


def write_sidecar(out: str | Path, record: dict) -> Path:
    path = sidecar_path(out)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=False, default=str))
    return path
