"""What the certificate compares against, and the recorder that makes it.

The shipped set (phyx/tools/certify/artifacts/, package data) holds, per model family, one parity
artifact per dtype (tiny model, a few layers captured) and the loss / grad-norm curves of a short
training run, plus certify_manifest.json saying where they were recorded. They are meant to be
recorded on a GPU (`phyx certify record --backend cuda --out DIR`); a set recorded elsewhere says
so in its manifest (`recorded_on`), and the certificate reports it.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
from pathlib import Path

from phyx.errors import PhyxError

SHIPPED = Path(__file__).resolve().parent / "artifacts"
MANIFEST = "certify_manifest.json"
# family -> (parity model, the few layers captured: blocks, attention, head)
MODELS = {
    "wan": ("tiny-wan-t2v", ("blocks.*", "blocks.*.self_attn", "blocks.*.cross_attn", "head")),
    "cosmos-predict2": ("tiny-cosmos-predict2-t2i", ("transformer_blocks.*", "transformer_blocks.*.attn1",
                                                     "transformer_blocks.*.attn2", "proj_out")),
    "cosmos3": ("tiny-cosmos3-video", ("layers.*:gen", "layers.*.self_attn:gen", "proj_out")),
}
DTYPES = ("fp32", "bf16")
LOSS_MODELS = ("tiny-wan-t2v", "tiny-cosmos-predict2-t2i")   # the families with a training loss
LOSS_STEPS, LOSS_WINDOW, LOSS_DTYPE = 8, 4, "fp32"


class CertifyError(PhyxError, ValueError):
    """Bad certificate input (backend, artifact set): the message names the fix."""


def certify_spec(model: str):
    """The zoo's parity spec with the certificate's few captured layers."""
    from phyx.tools.parity.model import get_model_spec

    layers = {m: lay for m, lay in MODELS.values()}[model]
    return dataclasses.replace(get_model_spec(model), layers=layers)


def fingerprint(model: str) -> str:
    """sha256 of the tiny model's config and seeded initial weights (built on the CPU): a reference
    set recorded before the model changed is stale, and the certificate says so instead of
    reporting a numerical divergence."""
    import hashlib

    import torch

    spec = certify_spec(model)
    h = hashlib.sha256(json.dumps(spec.config, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, t in sorted(spec.build().state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def stale(manifest: dict, model: str) -> str | None:
    """A reason if the set's recording of `model` no longer matches the model phyx builds now
    (None when it matches, or when the set predates fingerprints)."""
    want = (manifest.get("fingerprints") or {}).get(model)
    if want is not None and want != fingerprint(model):
        return (f"the reference set is stale: {model}'s config or initial weights changed since it was "
                f"recorded on {manifest.get('recorded_on')}; re-record it with `phyx certify record "
                f"--backend cuda --out phyx/tools/certify/artifacts --overwrite`")
    return None


def artifact_dir(root, model: str, dtype: str) -> str:
    return os.path.join(str(root), "models", f"{model}-{dtype}")


def loss_file(root, model: str) -> str:
    return os.path.join(str(root), "loss", f"{model}.json")


def recorded_on_gpu(manifest: dict) -> bool:
    """A reference set (manifest) recorded on real GPU hardware, not a CPU stand-in."""
    from phyx.backend import accelerator_of

    return accelerator_of(manifest.get("recorded_on"), bool(manifest.get("emulated"))) == "gpu"


def record(backend: str, out_dir: str, overwrite: bool = False) -> str:
    """Record exactly what the certificate needs on `backend` (meant for a CUDA GPU)."""
    import phyx
    from phyx.backend import backend_class
    from phyx.io.atomic import write_text_atomic
    from phyx.tools.parity import artifact as A
    from phyx.tools.parity.backends import using_backend
    from phyx.tools.parity.determinism import set_determinism
    from phyx.tools.parity.loss import train_spec
    from phyx.tools.parity.model import record_run

    cls = backend_class(backend)
    if cls.accelerator == "npu" or cls.emulated:
        raise CertifyError(f"phyx certify record: --backend {backend} would make the NPU its own "
                           f"reference; record on a GPU (--backend cuda), or on cpu for a labelled "
                           f"stand-in set")
    if os.path.exists(os.path.join(out_dir, MANIFEST)) and not overwrite:
        raise CertifyError(f"{out_dir} already holds a certificate artifact set; pass --overwrite "
                           f"or choose another --out")
    with using_backend(backend, "fast") as b:
        set_determinism(b)
        env = {"backend": b.name, "emulated": bool(b.emulated), "versions": b.versions(),
               "devices": b.describe_devices(), "precision_flags": b.precision_flags()}
    models, losses = [], []
    for family, (model, _) in MODELS.items():
        spec = certify_spec(model)
        for dt in DTYPES:
            run = record_run(spec, backend, dt)
            A.write(run, artifact_dir(out_dir, model, dt), overwrite=overwrite)
            models.append({"family": family, "model": model, "dtype": dt,
                           "path": os.path.relpath(artifact_dir(out_dir, model, dt), out_dir)})
    for model in LOSS_MODELS:
        c = train_spec(certify_spec(model), backend, steps=LOSS_STEPS, dtype=LOSS_DTYPE)
        curve = {"model": model, "backend": c.backend, "emulated": c.emulated, "dtype": c.dtype,
                 "steps": LOSS_STEPS, "loss": c.loss, "grad_norm": c.grad_norm}
        write_text_atomic(loss_file(out_dir, model), json.dumps(curve, indent=1))
        losses.append({"model": model, "path": os.path.relpath(loss_file(out_dir, model), out_dir)})
    manifest = {"what": "phyx certify reference set", "recorded_on": env["backend"],
                "emulated": env["emulated"], "environment": env,
                "recorded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "phyx": phyx.__version__, "models": models, "loss": losses,
                "fingerprints": {m: fingerprint(m) for m, _ in MODELS.values()},
                "note": ("recorded on a GPU: the reference the first NPU is certified against"
                         if recorded_on_gpu({"recorded_on": env["backend"], "emulated": env["emulated"]}) else
                         f"STAND-IN recorded on {env['backend']}, not a GPU: re-record with "
                         f"`phyx certify record --backend cuda --out phyx/tools/certify/artifacts "
                         f"--overwrite` on a CUDA machine")}
    write_text_atomic(os.path.join(out_dir, MANIFEST), json.dumps(manifest, indent=1))
    return out_dir


def load_manifest(root) -> dict:
    path = os.path.join(str(root), MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
    except FileNotFoundError:
        raise CertifyError(f"no certificate artifact set at {root} ({MANIFEST} missing): pass "
                           f"--artifacts DIR made by `phyx certify record`, or reinstall phyx (the "
                           f"set ships in phyx/tools/certify/artifacts)") from None
    except json.JSONDecodeError as e:
        raise CertifyError(f"{path} is not valid JSON ({e}): re-record the set with "
                           f"`phyx certify record`") from None
    for key in ("recorded_on", "models", "loss"):
        if key not in m:
            raise CertifyError(f"{path} has no {key!r}: re-record the set with `phyx certify record`")
    return m
