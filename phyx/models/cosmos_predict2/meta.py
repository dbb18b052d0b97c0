"""Build big models on the meta device and give them CPU storage without an init pass."""
from __future__ import annotations

from torch import nn

from phyx.sharding import ATTR, mark


def materialize(model: nn.Module, device="cpu") -> nn.Module:
    """model.to_empty(device) that keeps each parameter's TP ShardSpec (to_empty makes new
    Parameter objects, which would drop the mark and make the loader read full tensors)."""
    specs = {n: getattr(p, ATTR) for n, p in model.named_parameters() if hasattr(p, ATTR)}
    model = model.to_empty(device=device)
    for n, p in model.named_parameters():
        if n in specs:
            mark(p, specs[n])
    return model
