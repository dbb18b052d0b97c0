"""Checkpoint I/O: safetensors only (single file or sharded with an index), strict key
checks with readable reports, dtype conversion, and rank-local reads under TP (a parameter
marked with a phyx.sharding.ShardSpec is read as its slice only). Pickled official weights are
converted once by `phyx convert`; nothing here unpickles.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from phyx.errors import CheckpointError
from phyx.io import untrusted as U
from phyx.io.atomic import atomic_path, write_text_atomic
from phyx.sharding import ShardSpec, spec_of

INDEX_NAMES = ("model.safetensors.index.json", "diffusion_pytorch_model.safetensors.index.json")
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


class CheckpointReader:
    """Lazy reader over one or more safetensors files: key -> file, slices read on demand."""

    def __init__(self, files: dict[str, Path], origin: Path):
        self._where = files          # key -> file
        self.origin = origin
        self._handles: dict[Path, object] = {}

    def _h(self, path: Path):
        h = self._handles.get(path)
        if h is None:
            try:
                h = safe_open(str(path), framework="pt", device="cpu")
            except Exception as e:  # truncated / corrupt header
                raise CheckpointError(f"cannot read safetensors file {path}: {e}. The file is corrupt or "
                                      f"truncated; re-download or re-convert it.") from e
            self._handles[path] = h
        return h

    def keys(self) -> list[str]:
        return sorted(self._where)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._h(self._file(key)).get_slice(key).get_shape())

    def _file(self, key: str) -> Path:
        try:
            return self._where[key]
        except KeyError:
            raise CheckpointError(f"key {key!r} not in checkpoint {self.origin}") from None

    def get(self, key: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        try:
            t = self._h(self._file(key)).get_tensor(key)
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"cannot read tensor {key!r} from {self._file(key)}: {e} "
                                  f"(corrupt or truncated shard?)") from e
        return t.to(dtype) if dtype is not None else t

    def get_sharded(self, key: str, spec: ShardSpec, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Read only this rank's slice of `key` along spec.dim."""
        sl = self._h(self._file(key)).get_slice(key)
        shape = sl.get_shape()
        parts = []
        for a, b in spec.ranges(shape[spec.dim]):
            idx = tuple(slice(a, b) if d == spec.dim else slice(None) for d in range(len(shape)))
            parts.append(sl[idx])
        t = parts[0] if len(parts) == 1 else torch.cat(parts, dim=spec.dim)
        return t.to(dtype) if dtype is not None else t

    def numel(self) -> int:
        """Elements in all tensors (from the headers; nothing is read)."""
        total = 0
        for k in self._where:
            n = 1
            for d in self.shape(k):
                n *= int(d)
            total += n
        return total

    def check_config_size(self, params: int, what: str) -> None:
        """Refuse a config that describes far more parameters than this checkpoint holds, before
        the model is built (a config saying num_layers 10,000,000 beside a small checkpoint)."""
        have = self.numel()
        if params > 2 * have + 1_000_000:
            raise CheckpointError(f"{what} describes ~{params:.3g} parameters but checkpoint "
                                  f"{self.origin} holds {have:.3g}; the config does not match the "
                                  f"weights (check its sizes)")

    def metadata(self) -> dict:
        out = {}
        for f in sorted(set(self._where.values())):
            out.update(self._h(f).metadata() or {})
        return out


def _refuse_pickles(path: Path) -> None:
    if path.suffix in _PICKLE_SUFFIXES:
        raise CheckpointError(f"{path} is a pickle-format checkpoint; phyx loads safetensors only. Convert "
                              f"it once with: phyx convert {path} {path.with_suffix('.safetensors')}")


def open_checkpoint(path: str | os.PathLike) -> CheckpointReader:
    """A .safetensors file, or a directory holding one file or an index plus its shards."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint path {path} does not exist")
    if not path.is_dir():
        _refuse_pickles(path)
        U.regular_file(path, "checkpoint file", CheckpointError)
        return CheckpointReader({k: path for k in _file_keys(path)}, path)
    for name in INDEX_NAMES:
        idx = path / name
        if os.path.lexists(idx):
            return _open_index(idx)
    # names from the directory listing (not from data): symlinks are followed, but each must be
    # a regular file (never a FIFO or device)
    files = sorted(f for f in path.glob("*.safetensors")
                   if U.regular_file(f, "checkpoint file", CheckpointError))
    if not files:
        pickles = [p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES]
        hint = (f" It holds pickle files {pickles}: convert them with `phyx convert`." if pickles else "")
        raise CheckpointError(f"no .safetensors file or index in {path}.{hint}")
    where: dict[str, Path] = {}
    for f in files:
        for k in _file_keys(f):
            if k in where:
                raise CheckpointError(f"key {k!r} appears in both {where[k].name} and {f.name}; "
                                      f"a directory without an index must not repeat keys")
            where[k] = f
    return CheckpointReader(where, path)


def _file_keys(f: Path) -> list[str]:
    try:
        with safe_open(str(f), framework="pt", device="cpu") as h:
            return list(h.keys())
    except Exception as e:
        raise CheckpointError(f"cannot read safetensors file {f}: {e}. The file is corrupt or truncated; "
                              f"re-download or re-convert it.") from e


def _open_index(idx: Path) -> CheckpointReader:
    """An index names its shards; each must be a file name inside the checkpoint directory
    (no '..', not absolute, no symlink out of it) that is a regular file."""
    index = U.read_json(idx, "checkpoint index", CheckpointError)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"checkpoint index {idx}: 'weight_map' is missing or not an object "
                              f"of tensor name -> shard file name")
    bad = next(((k, v) for k, v in weight_map.items() if not isinstance(v, str)), None)
    if bad is not None:
        raise CheckpointError(f"checkpoint index {idx}: weight_map[{bad[0][:80]!r}] = "
                              f"{str(bad[1])[:40]!r} is not a shard file name")
    shards = sorted(set(weight_map.values()))
    for s in shards:   # a path leaving the directory is refused before anything is looked up
        if not s or Path(s).is_absolute() or ".." in Path(s).parts or "\x00" in s:
            raise CheckpointError(f"checkpoint index {idx}: shard {s[:120]!r} leaves the directory "
                                  f"{idx.parent}; shards must be file names inside it")
    missing = [s for s in shards if not os.path.lexists(idx.parent / s)]
    if missing:
        raise CheckpointError(f"checkpoint {idx.parent} is missing shard file(s) {missing[:10]} named "
                              f"in {idx.name}; download or copy them before loading")
    where = {}
    for shard in shards:
        U.file_in_dir(idx.parent, shard, f"shard named in {idx.name}:", CheckpointError)
        present = set(_file_keys(idx.parent / shard))
        for k, s in weight_map.items():
            if s == shard:
                if k not in present:
                    raise CheckpointError(f"{idx.name} says {k!r} is in {shard}, but it is not there "
                                          f"(corrupt or mismatched shard)")
                where[k] = idx.parent / shard
    return CheckpointReader(where, idx.parent)


def _fmt_keys(keys: Iterable[str], limit: int = 20) -> str:
    keys = sorted(keys)
    shown = "\n    ".join(keys[:limit])
    more = f"\n    ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"\n    {shown}{more}"


def load_state(module: torch.nn.Module, reader: CheckpointReader,
               rename: Callable[[str], str | None] | None = None, strict: bool = True,
               dtype: torch.dtype | None = None) -> dict:
    """Copy checkpoint tensors into `module`'s parameters and buffers.

    rename maps a checkpoint key to a module key (None = deliberately ignored). Parameters
    marked with a ShardSpec are read as their slice only. Returns {'missing', 'unexpected',
    'ignored'}; with strict, any missing or unexpected key raises a readable CheckpointError.
    """
    targets = dict(module.named_parameters())
    targets.update({k: v for k, v in module.named_buffers() if k not in targets})
    persistent = {k for k in module.state_dict().keys()}
    targets = {k: v for k, v in targets.items() if k in persistent}
    mapping: dict[str, str] = {}
    ignored, unexpected = [], []
    for ck in reader.keys():
        mk = rename(ck) if rename is not None else ck
        if mk is None:
            ignored.append(ck)
        elif mk in targets:
            if mk in mapping.values():
                raise CheckpointError(f"two checkpoint keys map to {mk!r} (one is {ck!r})")
            mapping[ck] = mk
        else:
            unexpected.append(ck)
    missing = sorted(set(targets) - set(mapping.values()))
    if strict and (missing or unexpected):
        msg = f"checkpoint {reader.origin} does not match {type(module).__name__}:"
        if missing:
            msg += f"\n  missing ({len(missing)}): parameters with no checkpoint key" + _fmt_keys(missing)
        if unexpected:
            msg += f"\n  unexpected ({len(unexpected)}): checkpoint keys with no parameter" + _fmt_keys(unexpected)
        msg += "\n  Check the model config (sizes, variant) and the checkpoint format."
        raise CheckpointError(msg)
    with torch.no_grad():
        for ck, mk in mapping.items():
            p = targets[mk]
            spec = spec_of(p)
            t = reader.get_sharded(ck, spec) if spec is not None else reader.get(ck)
            if p.is_floating_point() and not (t.is_floating_point() or t.is_complex()):
                raise CheckpointError(f"{ck!r} in {reader.origin} holds {str(t.dtype)[6:]} values where "
                                      f"{mk!r} is a floating-point {str(p.dtype)[6:]} parameter; the "
                                      f"checkpoint does not match the model (re-convert or re-download it)")
            if t.is_complex():
                raise CheckpointError(f"{ck!r} in {reader.origin} holds complex values; phyx checkpoints "
                                      f"hold real tensors")
            if tuple(t.shape) != tuple(p.shape):
                raise CheckpointError(f"shape mismatch for {ck!r} -> {mk!r}: checkpoint {tuple(t.shape)}"
                                      f"{' (this rank’s slice)' if spec else ''}, model {tuple(p.shape)}")
            p.copy_(t.to(dtype if dtype is not None and p.is_floating_point() else p.dtype))
    return {"missing": missing, "unexpected": unexpected, "ignored": ignored}


def save_safetensors_atomic(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                            metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata=metadata)


def save_sharded(tensors: dict[str, torch.Tensor], directory: str | os.PathLike,
                 max_shard_bytes: int = 2 * 1024**3, metadata: dict[str, str] | None = None,
                 prefix: str = "model") -> list[Path]:
    """Write shards `<prefix>-0000i-of-0000n.safetensors` plus `<prefix>.safetensors.index.json`."""
    directory = Path(directory)
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k in sorted(tensors):
        nbytes = tensors[k].numel() * tensors[k].element_size()
        if groups[-1] and size + nbytes > max_shard_bytes:
            groups.append({})
            size = 0
        groups[-1][k] = tensors[k]
        size += nbytes
    n = len(groups)
    paths, weight_map = [], {}
    for i, g in enumerate(groups, 1):
        name = f"{prefix}-{i:05d}-of-{n:05d}.safetensors"
        save_safetensors_atomic(g, directory / name, metadata)
        paths.append(directory / name)
        weight_map.update({k: name for k in g})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    write_text_atomic(directory / f"{prefix}.safetensors.index.json",
                      json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    return paths


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
