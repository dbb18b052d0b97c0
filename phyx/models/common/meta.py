"""One way to build a model without an init pass: construct it on the meta device, then give it
storage (empty, or seeded through phyx.models.common.init) keeping each parameter's ShardSpec
mark, so the sliced checkpoint loader still reads only this rank's part of each weight."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from phyx.sharding import ATTR, mark

__all__ = ["on_meta", "materialize"]


def on_meta(ctor: Callable[[], nn.Module]) -> nn.Module:
    """ctor() run on the meta device, without moving the caller's RNG."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return ctor()


def materialize(model: nn.Module, device="cpu", dtype: torch.dtype | None = None,
                keep_fp32: Callable[[str], bool] = lambda name: False) -> nn.Module:
    """Uninitialised storage on `device` for every parameter and buffer of a meta model
    (`dtype` for parameters when given, fp32 where keep_fp32(name)); ShardSpec marks are kept.
    Buffers come back empty too: use it for models whose buffers are filled by a load or
    recomputed in forward."""
    specs = {n: getattr(p, ATTR) for n, p in model.named_parameters() if hasattr(p, ATTR)}
    model = model.to_empty(device=device)
    if dtype is not None:
        for mname, mod in model.named_modules():
            for pname, p in list(mod._parameters.items()):
                if p is None:
                    continue
                full = f"{mname}.{pname}" if mname else pname
                want = torch.float32 if keep_fp32(full) else dtype
                if p.dtype != want:
                    mod._parameters[pname] = nn.Parameter(torch.empty(p.shape, dtype=want, device=p.device),
                                                          requires_grad=p.requires_grad)
    for n, p in model.named_parameters():
        if n in specs:
            mark(p, specs[n])
    return model
