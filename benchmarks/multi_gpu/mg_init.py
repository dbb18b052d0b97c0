"""Seeded random weights, the same on every rank and for every parallel layout.

Each parameter's full tensor is drawn from its own generator, seeded by (seed, parameter name),
so a model built for any layout holds slices of the same full weights: a TP rank draws the full
tensor, keeps its ShardSpec slice and drops the rest (only the slice stays resident), and a
model capped to fewer layers holds the first layers of the full-depth model. Models are built on
the meta device first, so the weights are allocated once, in their final dtype, on the device.

Drawing on the device is fast (a 14B model in seconds) but its numbers depend on the vendor's
RNG; device_rng_consistent() checks that every rank draws the same numbers before it is used.
"""
from __future__ import annotations

import hashlib
import math
import zlib

import torch
from torch import nn

from phyx import comm
from phyx.sharding import spec_of


def param_seed(seed: int, name: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2 ** 62)


def _value(name: str, r: torch.Tensor) -> torch.Tensor:
    """Scale a standard normal draw for parameter `name` (full shape): norm gains near 1,
    matrices ~ 1/sqrt(fan_in) so activations stay O(1) through many layers, modulation tables
    ~ 1/sqrt(dim) as upstream initialises them, small biases: no weight is a no-op."""
    leaf = name.rsplit(".", 1)[-1]
    if r.dim() == 1 and leaf == "weight" and "norm" in name:
        return 1.0 + 0.1 * r
    if "modulation" in leaf:
        return r / math.sqrt(r.shape[-1])
    if r.dim() >= 2:
        return r / math.sqrt(r[0].numel())
    return 0.05 * r


def full_shape(p: torch.Tensor) -> list[int]:
    shape = list(p.shape)
    spec = spec_of(p)
    if spec is not None:
        shape[spec.dim] *= spec.size
    return shape


def init_seeded_(model: nn.Module, seed: int, dtype: torch.dtype, device, *, rng_device="cpu",
                 keep_fp32=lambda name: False) -> nn.Module:
    """Give every parameter of `model` (typically on the meta device) its seeded value on
    `device`: `dtype`, or fp32 where keep_fp32(name). TP shard marks (phyx_shard) are kept."""
    if any(b is not None for b in model.buffers()):
        raise ValueError("init_seeded_ handles parameters only; this model has buffers: "
                         + ", ".join(n for n, _ in model.named_buffers()))
    for mod_name, mod in model.named_modules():
        for pname, p in list(mod._parameters.items()):
            if p is None:
                continue
            name = f"{mod_name}.{pname}" if mod_name else pname
            g = torch.Generator(device=rng_device).manual_seed(param_seed(seed, name))
            r = torch.randn(full_shape(p), generator=g, device=rng_device, dtype=torch.float32)
            full = _value(name, r)
            spec = spec_of(p)
            local = full.to(device=device, dtype=torch.float32 if keep_fp32(name) else dtype)
            if spec is not None:   # a compact copy of the slice: the full tensor must not stay alive
                local = spec.take(local).clone(memory_format=torch.contiguous_format)
            fresh = nn.Parameter(local, requires_grad=False)
            fresh.__dict__.update(p.__dict__)   # keeps the ShardSpec mark
            mod._parameters[pname] = fresh
            del r, full, local
    return model


def has_tp_shards(model: nn.Module) -> bool:
    return any(spec_of(p) is not None for p in model.parameters())


def tensor_digest(t: torch.Tensor) -> int:
    """A 63-bit digest of the exact bytes of `t` (for 'identical on every rank' checks)."""
    b = t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes()
    return int.from_bytes(hashlib.sha256(b).digest()[:8], "little") >> 1


def digests_across_ranks(t: torch.Tensor, device) -> list[int]:
    """Every rank's digest of its `t` (rank order)."""
    d = torch.tensor([tensor_digest(t)], dtype=torch.int64, device=device)
    return [int(v) for v in comm.all_gather(d, dim=0).cpu().tolist()]


def device_rng_consistent(device, seed: int = 1234) -> tuple[bool, str]:
    """Can parameters be drawn on `device`? True when a seeded device generator works there and
    gives the same numbers on every rank; otherwise the reason (then draw on the CPU)."""
    if torch.device(device).type == "cpu":
        return False, "device is the CPU"
    try:
        g = torch.Generator(device=device).manual_seed(seed)
        probe = torch.randn(1021, 1031, generator=g, device=device, dtype=torch.float32)
    except Exception as e:  # a backend without device generators
        return False, f"no seeded generator on {device}: {type(e).__name__}: {e}"
    ds = digests_across_ranks(probe, device)
    if len(set(ds)) != 1:
        return False, f"device RNG differs across ranks (digests {ds})"
    return True, f"device RNG identical on {len(ds)} rank(s)"
