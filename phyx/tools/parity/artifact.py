"""Portable parity artifacts: a directory with `tensors.safetensors` and `manifest.json`.

Written atomically (a temp directory renamed into place), checked on read: the manifest
carries the sha256 and size of the tensor file and a sha256 of its own canonical content, so a
tampered or truncated artifact is refused with a clear error (never compared silently).
No pickle anywhere: tensors go through safetensors, everything else is JSON.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file, save_file

from phyx.errors import PhyxError
from phyx.io.atomic import publish_dir
from phyx.tools.parity.capture import Capture, Record

FORMAT = "phyx-parity/1"
TENSORS, MANIFEST = "tensors.safetensors", "manifest.json"
ENV_PREFIXES = ("PHYX_", "HCCL_", "ASCEND_", "CUBLAS_", "CUDA_", "NVIDIA_TF32", "TORCH_", "NCCL_",
                "CLOSE_MATMUL_K_SHIFT", "INF_NAN_MODE_ENABLE", "OMP_NUM_THREADS", "MKL_")


class ArtifactError(PhyxError):
    pass


class NotComparableError(PhyxError):
    pass


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tensor_sha256(t: torch.Tensor) -> str:
    t = t.detach().to("cpu").contiguous()
    h = hashlib.sha256(str(t.dtype).encode() + str(tuple(t.shape)).encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _canonical(manifest: dict) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return json.dumps(body, sort_keys=True, default=str).encode()


# --- environment ------------------------------------------------------------------------------
def environment(backend=None) -> dict:
    """Versions, backend identity, kernels and switches in force: what makes two runs differ."""
    import phyx
    from phyx.ops import chosen_kernels, get_policy
    from phyx.tools.parity.determinism import determinism_flags

    b = backend or phyx.get_backend()
    env = {
        "backend": b.name, "emulated": bool(b.emulated),
        "device_type": b.device_type, "devices": _safe(b.describe_devices),
        "versions": {"python": platform.python_version(), "phyx": phyx.__version__,
                     **_safe(b.versions, {})},
        "hardware": _safe(b.hardware_info, None),
        "policy": get_policy(), "kernels": chosen_kernels(),
        "precision_flags": _safe(b.precision_flags, {}),
        "determinism": determinism_flags(b),
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)},
        "host": platform.node(), "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        from phyx.parallel import get_parallel_state

        st = get_parallel_state()
        env["parallel"] = {"cfg": st.cfg_size, "sp": st.sp_size, "tp": st.tp_size,
                           "describe": st.describe()}
    except Exception as e:  # parallel layer absent or not initialised
        env["parallel"] = {"cfg": 1, "sp": 1, "tp": 1, "note": str(e)[:200]}
    return env


def _safe(fn, default=None):
    try:
        return fn() if fn is not None else default
    except Exception as e:
        return default if default is not None else f"unavailable: {e}"


# --- the in-memory run --------------------------------------------------------------------------
@dataclass
class RunData:
    """One recorded run: manifest (JSON) + tensors (name -> CPU tensor)."""

    manifest: dict
    tensors: dict = field(default_factory=dict)
    path: str | None = None

    @property
    def layers(self) -> list[dict]:
        return self.manifest.get("layers", [])

    def layer(self, name: str) -> dict:
        for L in self.layers:
            if L["name"] == name:
                return L
        raise KeyError(name)

    def output(self, layer: dict, key: str):
        return self.tensors.get(f"L/{layer['name']}/{key}")

    def input_tensors(self, layer: dict) -> dict:
        p = f"L/{layer['name']}/"
        return {k[len(p):]: v for k, v in self.tensors.items() if k.startswith(p + "in.")}

    def replay_output(self, layer: dict, key: str):
        return self.tensors.get(f"R/{layer['name']}/{key}")

    @property
    def emulated(self) -> bool:
        return bool(self.manifest.get("environment", {}).get("emulated"))

    @property
    def backend_label(self) -> str:
        env = self.manifest.get("environment", {})
        name = env.get("backend", "?")
        return f"{name} (EMULATED)" if env.get("emulated") else name


def run_from_capture(cap: Capture, *, run: dict, inputs: dict, outputs: dict,
                     backend=None) -> RunData:
    """Assemble a RunData: `run` holds model name/config/seed/dtype; `inputs` the same-inputs
    tensors drawn on the CPU (stored so the other side can check and reuse them)."""
    tensors, layers = {}, []
    for rec in cap.records:
        layers.append(_layer_entry(rec, cap.mode))
        for k, t in rec.tensors.items():
            tensors[f"L/{rec.name}/{k}"] = t
    for k, t in inputs.items():
        tensors[f"inputs/{k}"] = t.detach().to("cpu").contiguous()
    for k, t in outputs.items():
        tensors[f"outputs/{k}"] = t.detach().to("cpu").contiguous()
    manifest = {
        "format": FORMAT,
        "run_id": uuid.uuid4().hex,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run": run, "capture_mode": cap.mode, "environment": environment(backend),
        "inputs": {k: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
                       "sha256": tensor_sha256(t)} for k, t in inputs.items()},
        "outputs": {k: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
                    for k, t in outputs.items()},
        "layers": layers,
    }
    return RunData(manifest, tensors)


def _layer_entry(rec: Record, mode: str) -> dict:
    return {"idx": rec.idx, "name": rec.name, "target": rec.target, "kind": rec.kind,
            "inputs": rec.inputs, "outputs": rec.outputs,
            "shapes": {k: s["shape"] for k, s in rec.stats.items()},
            "dtypes": {k: s["dtype"] for k, s in rec.stats.items()},
            "stats": rec.stats if mode == "stats" else
            {k: {kk: vv for kk, vv in s.items() if kk != "sample"} for k, s in rec.stats.items()}}


# --- disk -------------------------------------------------------------------------------------
def write(run: RunData, path: str, overwrite: bool = False) -> str:
    """Write atomically: build in a temp dir beside `path`, then rename into place."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(path) and not overwrite:
        raise ArtifactError(f"{path} exists; pass overwrite=True (--overwrite) or choose a new path")
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        tfile = os.path.join(tmp, TENSORS)
        save_file({k: v.contiguous() for k, v in run.tensors.items()}, tfile,
                  metadata={"format": FORMAT})
        manifest = dict(run.manifest)
        manifest["files"] = {TENSORS: {"sha256": _sha256_file(tfile), "bytes": os.path.getsize(tfile)}}
        manifest["tensor_count"] = len(run.tensors)
        manifest["manifest_sha256"] = hashlib.sha256(_canonical(manifest)).hexdigest()
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        publish_dir(tmp)
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
            os.replace(path, os.path.join(old, "a"))
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    run.manifest, run.path = manifest, path
    return path


def read(path: str, verify: bool = True, load_tensors: bool = True) -> RunData:
    """Read and verify an artifact. Raises ArtifactError naming what is wrong."""
    mpath, tpath = os.path.join(path, MANIFEST), os.path.join(path, TENSORS)
    if not os.path.isdir(path):
        raise ArtifactError(f"{path}: not a parity artifact directory (record one with "
                            f"`phyx parity record`)")
    if not os.path.isfile(mpath):
        raise ArtifactError(f"{path}: {MANIFEST} missing: incomplete or not a parity artifact")
    try:
        with open(mpath) as f:
            manifest = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{mpath}: unreadable manifest ({e}): truncated or tampered") from e
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: format {manifest.get('format')!r}, this phyx reads {FORMAT!r}")
    if verify:
        want = manifest.get("manifest_sha256")
        if want != hashlib.sha256(_canonical(manifest)).hexdigest():
            raise ArtifactError(f"{mpath}: manifest checksum mismatch: the manifest was edited or "
                                f"corrupted after recording")
        if not os.path.isfile(tpath):
            raise ArtifactError(f"{path}: {TENSORS} missing")
        info = manifest["files"][TENSORS]
        size = os.path.getsize(tpath)
        if size != info["bytes"]:
            raise ArtifactError(f"{tpath}: {size} bytes, manifest says {info['bytes']}: truncated "
                                f"or replaced")
        if _sha256_file(tpath) != info["sha256"]:
            raise ArtifactError(f"{tpath}: sha256 mismatch: the tensors were modified after "
                                f"recording")
    tensors = {}
    if load_tensors:
        try:
            tensors = load_file(tpath)
        except Exception as e:
            raise ArtifactError(f"{tpath}: cannot read tensors ({e})") from e
    return RunData(manifest, tensors, path)


def add_replay(run: RunData, replays: dict[str, dict[str, torch.Tensor]], source: RunData) -> None:
    """Attach replay outputs (this backend's layer outputs on `source`'s recorded inputs)."""
    for name, outs in replays.items():
        for k, t in outs.items():
            run.tensors[f"R/{name}/{k}"] = t.detach().to("cpu").contiguous()
    run.manifest["replay_of"] = {
        "run_id": source.manifest.get("run_id"),
        "backend": source.manifest.get("environment", {}).get("backend"),
        "layers": sorted(replays)}
