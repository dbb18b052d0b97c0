"""ShardSpec: how a rank's slice of a parameter is cut from the full tensor.

Shared by phyx.parallel (which marks parameters) and the checkpoint loader (which reads only
the slice, so under TP each rank reads only its part of each weight). A dimension may be a
concatenation of sections that are each split evenly: fused QKV is sections (Nq*D, Nkv*D, Nkv*D),
a gated MLP packed [gate | up] is (H, H); rank r takes part r of every section, concatenated,
so each shard is itself packed [gate_r | up_r].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

ATTR = "phyx_shard"


@dataclass(frozen=True)
class ShardSpec:
    dim: int
    rank: int
    size: int
    sections: tuple[int, ...] | None = None  # None: the whole dim is one section

    def ranges(self, full: int) -> list[tuple[int, int]]:
        secs = self.sections or (full,)
        if sum(secs) != full:
            raise ValueError(f"shard sections {secs} do not add up to the full size {full}")
        out, base = [], 0
        for s in secs:
            if s % self.size:
                raise ValueError(f"section of size {s} does not split into {self.size} equal shards")
            part = s // self.size
            out.append((base + self.rank * part, base + (self.rank + 1) * part))
            base += s
        return out

    def local_size(self, full: int) -> int:
        return sum(b - a for a, b in self.ranges(full))

    def take(self, full: torch.Tensor) -> torch.Tensor:
        """Cut this rank's slice from a full tensor."""
        parts = [full.narrow(self.dim, a, b - a) for a, b in self.ranges(full.shape[self.dim])]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=self.dim)


def mark(param: torch.Tensor, spec: ShardSpec | None) -> torch.Tensor:
    if spec is not None:
        setattr(param, ATTR, spec)
    return param


def spec_of(param: torch.Tensor) -> ShardSpec | None:
    return getattr(param, ATTR, None)
