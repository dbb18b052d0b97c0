"""`phyx convert`: turn an official pickled checkpoint (.pt / .pth) into safetensors, once.

This is the only place in phyx that unpickles, and it does so with torch.load(weights_only=True),
which refuses arbitrary objects. Nested containers ({'model': {...}}, {'state_dict': {...}},
{'ema': {...}}) are flattened to dotted keys; non-tensor leaves (step counters, config strings)
are dropped and listed. Shared or non-contiguous storage is copied so safetensors can write it.
The output is written atomically (temp file + os.replace).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from phyx.errors import CheckpointError
from phyx.io import untrusted as U

_ZIP_MAGIC = b"PK\x03\x04"


def is_zip_checkpoint(path: str | Path) -> bool:
    """True for torch's zip serialization (the default since torch 1.6), False for the legacy
    format (`_use_new_zipfile_serialization=False`), which torch.load cannot mmap."""
    with open(path, "rb") as f:
        return f.read(4) == _ZIP_MAGIC


def _flatten(obj, prefix: str, out: dict, dropped: list) -> None:
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out, dropped)
    elif isinstance(obj, (list, tuple)) and obj and all(isinstance(v, torch.Tensor) for v in obj):
        for i, v in enumerate(obj):
            out[f"{prefix}.{i}" if prefix else str(i)] = v
    else:
        dropped.append(prefix or "<root>")


def load_pickled_state(path: str | Path, unwrap: str | None = "auto") -> tuple[dict, list]:
    """Read `path` with torch.load(weights_only=True); return (flat tensor dict, dropped keys).

    unwrap 'auto': if the top level is a dict whose only weight-bearing entry is one of 'model',
    'state_dict', 'module', descend into it (the layouts NVIDIA's and Wan's releases use); with
    several (e.g. 'model' and 'ema') everything is kept under dotted prefixes."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    U.regular_file(path, "checkpoint to convert", CheckpointError)
    try:
        # mmap works only for the zip format (torch >= 1.6); legacy (non-zip) files load whole
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=is_zip_checkpoint(path))
    except Exception as e:
        raise CheckpointError(f"cannot read {path} with torch.load(weights_only=True): {e}. phyx never "
                              f"loads arbitrary pickled objects; if the file holds more than tensors and "
                              f"plain containers, extract the state dict where it was made.") from e
    if unwrap == "auto" and isinstance(obj, dict):
        for key in ("model", "state_dict", "module"):
            inner = obj.get(key)
            others = [v for k, v in obj.items() if k != key and isinstance(v, (dict, torch.Tensor))]
            if isinstance(inner, dict) and not others:  # only unwrap when nothing else holds weights
                obj = inner
                break
    out, dropped = {}, []
    _flatten(obj, "", out, dropped)
    if not out:
        raise CheckpointError(f"{path} holds no tensors")
    return out, dropped


def convert(src: str | Path, dst: str | Path, dtype: torch.dtype | None = None,
            overwrite: bool = False) -> dict:
    """Convert one pickled checkpoint to one safetensors file; returns a summary dict. An existing
    `dst` is replaced only with overwrite=True, and only when it is a regular file."""
    from phyx.io.checkpoint import save_safetensors_atomic

    src, dst = Path(src), Path(dst)
    if os.path.isdir(dst):
        raise CheckpointError(f"output {dst} is a directory; name the .safetensors file to write, "
                              f"e.g. {dst / src.with_suffix('.safetensors').name}")
    if dst.suffix != ".safetensors":
        raise CheckpointError(f"output must end in .safetensors, got {dst}")
    if os.path.lexists(dst):
        kind = U.file_kind(dst)
        if kind != "regular file" and not os.path.islink(dst):
            raise CheckpointError(f"output {dst} is a {kind}; phyx writes only regular files")
        if not overwrite:
            raise CheckpointError(f"output {dst} exists; pass --overwrite to replace it or choose "
                                  f"another name")
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise CheckpointError(f"output {dst} is the input file")
    tensors, dropped = load_pickled_state(src)
    seen: dict[int, str] = {}
    clean = {}
    for k, t in tensors.items():
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in seen or not t.is_contiguous():
            t = t.clone()          # safetensors refuses shared / strided storage
        if ptr is not None:
            seen.setdefault(ptr, k)
        clean[k] = t.contiguous()
    meta = {"converted_from": src.name, "converter": "phyx convert (torch.load weights_only=True)"}
    save_safetensors_atomic(clean, dst, metadata=meta)
    return {"src": str(src), "dst": str(dst), "tensors": len(clean), "dropped": dropped,
            "bytes": sum(t.numel() * t.element_size() for t in clean.values())}
