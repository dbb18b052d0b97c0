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
from phyx.io import untrusted as U
from phyx.io.atomic import publish_dir
from phyx.tools.parity.capture import Capture, Record

FORMAT = "phyx-parity/1"
TENSORS, MANIFEST = "tensors.safetensors", "manifest.json"
ENV_PREFIXES = ("PHYX_", "HCCL_", "ASCEND_", "CUBLAS_", "CUDA_", "NVIDIA_TF32", "TORCH_", "NCCL_",
                "CLOSE_MATMUL_K_SHIFT", "INF_NAN_MODE_ENABLE", "OMP_NUM_THREADS", "MKL_")


class ArtifactError(PhyxError):
    pass


MANIFEST_MAX_BYTES = U.JSON_MAX_BYTES
DTYPE_NAMES = ("fp32", "float32", "bf16", "bfloat16", "fp16", "float16", "fp64", "float64")
LAYER_KINDS = ("module", "method", "fn", "op")


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
    from phyx.parallel import get_parallel_state

    st = get_parallel_state()   # a trivial single-device state when none was initialised
    env["parallel"] = {"cfg": st.cfg_size, "sp": st.sp_size, "tp": st.tp_size,
                       "ulysses": st.ulysses_size, "ring": st.ring_size, "describe": st.describe()}
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
            **({"autocast": rec.autocast} if rec.autocast else {}),
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
    if os.path.lexists(path):
        if not overwrite:
            raise ArtifactError(f"{path} exists; pass overwrite=True (--overwrite) or choose a new path")
        why = replace_refusal(path)
        if why:
            raise ArtifactError(f"{path} {why}; --overwrite replaces only a parity artifact "
                                f"(a directory with a phyx {MANIFEST}); choose a new path")
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


def replace_refusal(path: str) -> str | None:
    """Why the existing `path` is not a parity artifact that write(overwrite=True) may replace."""
    if os.path.islink(path):
        return "is a symbolic link"
    if not os.path.isdir(path):
        return f"is a {U.file_kind(path) or 'file'}, not an artifact directory"
    try:
        m = U.read_json(os.path.join(path, MANIFEST), "manifest", ArtifactError, MANIFEST_MAX_BYTES)
    except ArtifactError:
        return f"is a directory without a readable {MANIFEST}"
    if m.get("format") != FORMAT:
        return f"holds a {MANIFEST} of format {str(m.get('format'))[:40]!r}, not {FORMAT!r}"
    extra = sorted(set(os.listdir(path)) - {MANIFEST, TENSORS})
    if extra:
        return f"holds files phyx did not write ({', '.join(extra[:5])})"
    return None


def read(path: str, verify: bool = True, load_tensors: bool = True) -> RunData:
    """Read and verify an artifact. Raises ArtifactError naming what is wrong.

    Everything in it is data: the manifest is size- and depth-capped and checked against the
    schema (validate_manifest) before use, and only the tensor file inside the directory is
    opened. Nothing an artifact names is imported or called."""
    path = str(path)
    if not os.path.isdir(path):
        raise ArtifactError(f"{path}: not a parity artifact directory (record one with "
                            f"`phyx parity record`)")
    mpath = os.path.join(path, MANIFEST)
    if not os.path.lexists(mpath):
        raise ArtifactError(f"{path}: {MANIFEST} missing: incomplete or not a parity artifact")
    mpath = str(U.file_in_dir(path, MANIFEST, "manifest", ArtifactError, MANIFEST_MAX_BYTES))
    try:
        manifest = U.read_json(mpath, "manifest", ArtifactError, MANIFEST_MAX_BYTES)
    except ArtifactError as e:
        raise ArtifactError(f"unreadable manifest: {e}; truncated, tampered or not a parity "
                            f"artifact") from None
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: format {str(manifest.get('format'))[:60]!r}, this phyx reads "
                            f"{FORMAT!r}")
    validate_manifest(manifest, mpath)
    tpath = os.path.join(path, TENSORS)
    if verify:
        want = manifest.get("manifest_sha256")
        if want != hashlib.sha256(_canonical(manifest)).hexdigest():
            raise ArtifactError(f"{mpath}: manifest checksum mismatch: the manifest was edited or "
                                f"corrupted after recording")
        if not os.path.lexists(tpath):
            raise ArtifactError(f"{path}: {TENSORS} missing")
        info = manifest["files"][TENSORS]
        size = U.regular_file(U.file_in_dir(path, TENSORS, "tensor file", ArtifactError),
                              "tensor file", ArtifactError).st_size
        if size != info["bytes"]:
            raise ArtifactError(f"{tpath}: {size} bytes, manifest says {info['bytes']}: truncated "
                                f"or replaced")
        if _sha256_file(tpath) != info["sha256"]:
            raise ArtifactError(f"{tpath}: sha256 mismatch: the tensors were modified after "
                                f"recording")
    tensors = {}
    if load_tensors:
        U.file_in_dir(path, TENSORS, "tensor file", ArtifactError)
        try:
            tensors = load_file(tpath)
        except Exception as e:
            raise ArtifactError(f"{tpath}: cannot read tensors ({str(e)[:200]})") from e
    return RunData(manifest, tensors, path)


# --- the manifest schema ------------------------------------------------------------------------
def _need(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise ArtifactError(f"{where}: {what}; not a manifest phyx wrote (re-record the artifact)")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _shape_ok(v) -> bool:
    return isinstance(v, list) and len(v) <= 16 and all(_is_int(x) and x >= 0 for x in v)


def validate_manifest(m, where: str = "manifest") -> dict:
    """Check the structure every reader of a manifest relies on; ArtifactError naming the first
    entry that is missing or of the wrong type."""
    _need(isinstance(m, dict), where, "the top level is not an object")
    files = m.get("files")
    _need(isinstance(files, dict) and isinstance(files.get(TENSORS), dict), where,
          f"'files' has no entry for {TENSORS}")
    for name in files:
        _need(isinstance(name, str) and name in (TENSORS, MANIFEST), where,
              f"'files' names {str(name)[:80]!r}; an artifact holds only {TENSORS}")
    info = files[TENSORS]
    _need(isinstance(info.get("sha256"), str) and _is_int(info.get("bytes")) and info["bytes"] >= 0,
          where, f"files.{TENSORS} needs a sha256 string and a byte count")
    run = m.get("run")
    _need(isinstance(run, dict), where, "'run' is missing or not an object")
    _need(isinstance(run.get("model"), str) and len(run["model"]) <= 200, where,
          "run.model is missing or not a string")
    _need(isinstance(run.get("config", {}), dict), where, "run.config is not an object")
    _need(_is_int(run.get("seed", 0)), where, "run.seed is not a whole number")
    _need(isinstance(run.get("per_op", False), bool), where, "run.per_op is not true/false")
    _need(run.get("dtype", "fp32") in DTYPE_NAMES, where,
          f"run.dtype {str(run.get('dtype'))[:40]!r} is not one of {DTYPE_NAMES}")
    _need(m.get("capture_mode", "full") in ("full", "stats"), where, "capture_mode is not full/stats")
    for key in ("environment", "inputs", "outputs"):
        _need(isinstance(m.get(key, {}), dict), where, f"'{key}' is not an object")
    env = m.get("environment", {})
    _need(isinstance(env.get("backend", ""), (str, type(None))), where,
          "environment.backend is not a string")
    for k, v in m.get("inputs", {}).items():
        _need(isinstance(v, dict) and _shape_ok(v.get("shape")) and isinstance(v.get("sha256"), str),
              where, f"inputs.{k} needs a shape list and a sha256 string")
    for k, v in m.get("outputs", {}).items():
        _need(isinstance(v, dict) and _shape_ok(v.get("shape", [])), where,
              f"outputs.{k} needs a shape list")
    layers = m.get("layers", [])
    _need(isinstance(layers, list), where, "'layers' is not a list")
    seen = set()
    for i, L in enumerate(layers):
        w = f"layers[{i}]"
        _need(isinstance(L, dict), where, f"{w} is not an object")
        _need(isinstance(L.get("name"), str) and L["name"] not in seen, where,
              f"{w}.name is missing, not a string or repeated")
        seen.add(L["name"])
        _need(_is_int(L.get("idx")), where, f"{w}.idx is not a whole number")
        _need(L.get("kind") in LAYER_KINDS, where, f"{w}.kind is not one of {LAYER_KINDS}")
        _need(isinstance(L.get("target"), str), where, f"{w}.target is not a string")
        _need(isinstance(L.get("outputs"), list) and all(isinstance(k, str) for k in L["outputs"]),
              where, f"{w}.outputs is not a list of names")
        inp = L.get("inputs")
        _need(inp is None or (isinstance(inp, dict) and isinstance(inp.get("args"), dict)
                              and isinstance(inp.get("kwargs"), dict)),
              where, f"{w}.inputs is not null or an object with args and kwargs")
        _need(isinstance(L.get("shapes"), dict) and all(_shape_ok(s) for s in L["shapes"].values()),
              where, f"{w}.shapes is not an object of shape lists")
        stats = L.get("stats", {})
        _need(isinstance(stats, dict), where, f"{w}.stats is not an object")
        for k, st in stats.items():
            _need(isinstance(st, dict), where, f"{w}.stats.{k} is not an object")
            if "sample" in st:
                _need(isinstance(st["sample"], list) and len(st["sample"]) <= 4096
                      and all(_is_num(x) for x in st["sample"]) and _is_num(st.get("l2")),
                      where, f"{w}.stats.{k} needs a list of numbers 'sample' and a number 'l2'")
    rep = m.get("replay_of")
    if rep is not None:
        _need(isinstance(rep, dict) and isinstance(rep.get("layers", []), list), where,
              "replay_of is not an object with a layer list")
    errs = m.get("replay_errors")
    _need(errs is None or (isinstance(errs, dict) and all(isinstance(v, str) for v in errs.values())),
          where, "replay_errors is not an object of messages")
    return m


def add_replay(run: RunData, replays: dict[str, dict[str, torch.Tensor]], source: RunData) -> None:
    """Attach replay outputs (this backend's layer outputs on `source`'s recorded inputs)."""
    for name, outs in replays.items():
        for k, t in outs.items():
            run.tensors[f"R/{name}/{k}"] = t.detach().to("cpu").contiguous()
    run.manifest["replay_of"] = {
        "run_id": source.manifest.get("run_id"),
        "backend": source.manifest.get("environment", {}).get("backend"),
        "layers": sorted(replays)}
