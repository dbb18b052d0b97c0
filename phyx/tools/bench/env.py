"""What a result file records about the machine it came from: date, device, versions, backend,
policy and the host-side switches that change timings (so two machines' JSON can be compared)."""
from __future__ import annotations

import datetime
import json
import os
import platform

import torch

# Host-side settings that change timings, recorded as found (None = unset): phyx's own, plus
# every registered backend's `host_env_vars` (all of them, so two machines' files line up).
PHYX_HOST_ENV = ("PHYX_BACKEND", "PHYX_POLICY")


def host_env_names() -> tuple[str, ...]:
    from phyx.backend import host_env_vars

    return tuple(dict.fromkeys(PHYX_HOST_ENV + host_env_vars()))


def host_settings() -> dict:
    return {k: os.environ.get(k) for k in host_env_names()}


def machine_meta(note: str | None = None) -> dict:
    import phyx

    b = phyx.get_backend()
    meta = {
        "date": datetime.date.today().isoformat(),
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "backend": b.name,
        "emulated": b.emulated,
        "policy": phyx.get_policy(),
        "device": (b.describe_devices() or ["?"])[0],
        "device_count": len(b.describe_devices()),
        "versions": {"python": platform.python_version(), **b.versions()},
        "precision_flags": b.precision_flags(),
        "kernels": phyx.ops.chosen_kernels(),
        "host": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                 "torch_threads": torch.get_num_threads(), "settings": host_settings()},
    }
    if b.hardware_info():
        meta["hardware"] = b.hardware_info()
    if note:
        meta["note"] = note
    return meta


def write_json(obj: dict, path: str) -> None:
    """Atomic: temp file then os.replace, so a killed run never leaves half a result."""
    from phyx.io.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(obj, indent=1, default=str) + "\n")
