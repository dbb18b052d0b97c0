"""Weights and digests for the multi-GPU harness.

Seeded weights come from phyx.models.common.init (init_seeded_: one generator per parameter,
seeded by (seed, name), so every layout holds slices of the same full weights). Drawing on the
device is fast (a 14B model in seconds) but its numbers depend on the vendor's RNG;
device_rng_consistent() checks that every rank draws the same numbers before it is used.
"""
from __future__ import annotations

import hashlib

import torch

from phyx import comm
from phyx.models.common.init import full_shape, has_tp_shards, init_seeded_, param_seed
from phyx.sharding import spec_of

__all__ = ["init_seeded_", "param_seed", "full_shape", "has_tp_shards", "spec_of", "tensor_digest",
           "digests_across_ranks", "device_rng_consistent"]


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
