"""Seeded random weights, the same on every rank and for every parallel layout.

Each parameter's full tensor is drawn from its own generator, seeded by (seed, parameter name),
so a model built for any layout holds slices of the same full weights: a TP rank draws the full
tensor, keeps its ShardSpec slice and drops the rest (only the slice stays resident), and a
model capped to fewer layers holds the first layers of the full-depth model. Build the model on
the meta device first (phyx.models.common.meta.on_meta) and the weights are allocated once, in
their final dtype, on the device.

This is the one seeded initialiser of phyx: tiny checkpoints, the parity zoo, the model
benchmarks and the multi-GPU harness all draw their weights here.
"""
from __future__ import annotations

import math
import zlib

import torch
from torch import nn

from phyx.sharding import spec_of

__all__ = ["init_seeded_", "param_seed", "full_shape", "has_tp_shards"]


def param_seed(seed: int, name: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2 ** 62)


def _is_norm(name: str, module: nn.Module) -> bool:
    return "norm" in name or "Norm" in type(module).__name__


def _value(name: str, module: nn.Module, r: torch.Tensor) -> torch.Tensor:
    """Scale a standard normal draw for parameter `name` (full shape): norm gains near 1,
    matrices ~ 1/sqrt(fan_in) so activations stay O(1) through many layers, modulation tables
    ~ 1/sqrt(dim) as upstream initialises them, small biases: no weight is a no-op."""
    leaf = name.rsplit(".", 1)[-1]
    if r.dim() == 1 and leaf == "weight" and _is_norm(name, module):
        return 1.0 + 0.1 * r
    if "modulation" in leaf:
        return r / math.sqrt(r.shape[-1])
    if r.dim() >= 2:
        return r / math.sqrt(r[0].numel())
    return 0.05 * r


def full_shape(p: torch.Tensor) -> list[int]:
    """The shape of the full (unsharded) tensor a TP-sharded parameter is a slice of."""
    shape = list(p.shape)
    spec = spec_of(p)
    if spec is not None:
        shape[spec.dim] *= spec.size
    return shape


def init_seeded_(model: nn.Module, seed: int, dtype: torch.dtype = torch.float32, device="cpu", *,
                 rng_device="cpu", keep_fp32=lambda name: False) -> nn.Module:
    """Give every parameter of `model` (typically on the meta device) its seeded value on
    `device`: `dtype`, or fp32 where keep_fp32(name). TP shard marks (phyx_shard) are kept.
    Buffers are left alone; a buffer still on the meta device is an error (it would stay empty)."""
    meta = [n for n, b in model.named_buffers() if b is not None and b.is_meta]
    if meta:
        raise ValueError("init_seeded_ draws parameters only; these buffers are on the meta device: "
                         + ", ".join(meta) + ". Register them with persistent values or build off-meta")
    for mod_name, mod in model.named_modules():
        for pname, p in list(mod._parameters.items()):
            if p is None:
                continue
            name = f"{mod_name}.{pname}" if mod_name else pname
            g = torch.Generator(device=rng_device).manual_seed(param_seed(seed, name))
            r = torch.randn(full_shape(p), generator=g, device=rng_device, dtype=torch.float32)
            full = _value(name, mod, r)
            spec = spec_of(p)
            local = full.to(device=device, dtype=torch.float32 if keep_fp32(name) else dtype)
            if spec is not None:   # a compact copy of the slice: the full tensor must not stay alive
                local = spec.take(local).clone(memory_format=torch.contiguous_format)
            fresh = nn.Parameter(local, requires_grad=p.requires_grad)
            fresh.__dict__.update(p.__dict__)   # keeps the ShardSpec mark
            mod._parameters[pname] = fresh
            del r, full, local
    return model


def has_tp_shards(model: nn.Module) -> bool:
    return any(spec_of(p) is not None for p in model.parameters())
