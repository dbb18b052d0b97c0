"""Declarative tensor-parallel plans: a family says, as data, which of its single-device modules
are column- or row-parallel and which norms span all heads; parallelize() swaps those modules
for phyx's TP layers. A wrong plan still runs and makes a plausible picture, so the plan lives
in one visible place per family (phyx/models/<family>/plan.py) and is checked when applied.

    TP_PLAN = {"blocks.*.self_attn.q": Colwise(), "blocks.*.self_attn.o": Rowwise(),
               "blocks.*.self_attn.norm_q": HeadShardedRMSNorm()}
    parallelize(model, TP_PLAN, state)        # no-op when tp == 1

Patterns are dotted module paths; `*` matches one path component. Every pattern must match at
least one module unless its style says optional=True (parts only some checkpoints have). The new
layers keep phyx.sharding.ShardSpec marks, so the sliced checkpoint loader reads only this rank's
slice; weights already present (not on the meta device) are sliced in place of a reload. Heads
per rank then follow from the layers' actual shapes: model code views [.., -1, head_dim].
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from phyx.errors import LayoutError
from phyx.parallel.layers import ColumnParallelLinear, RowParallelLinear, TPRMSNorm
from phyx.parallel.state import ParallelState, get_parallel_state
from phyx.sharding import spec_of


@dataclass(frozen=True)
class ParallelStyle:
    optional: bool = False

    def build(self, module: nn.Module, state: ParallelState) -> nn.Module:  # pragma: no cover
        raise NotImplementedError


def _like(module: nn.Module) -> dict:
    w = module.weight
    return {"device": w.device, "dtype": w.dtype}


def _need_linear(style, module, name):
    if type(module) is not nn.Linear:
        raise LayoutError(f"TP plan: {type(style).__name__} for {name!r} needs an nn.Linear, found "
                          f"{type(module).__name__}; fix the family's TP_PLAN")


@dataclass(frozen=True)
class Colwise(ParallelStyle):
    """nn.Linear -> ColumnParallelLinear: output features split; `sections` for a fused output
    (e.g. (ffn, ffn) for a packed [gate | up])."""
    sections: tuple | None = None

    def build(self, module, state):
        return ColumnParallelLinear(module.in_features, module.out_features, module.bias is not None,
                                    sections=self.sections, state=state, **_like(module))


@dataclass(frozen=True)
class Rowwise(ParallelStyle):
    """nn.Linear -> RowParallelLinear: input features split, outputs summed by one all-reduce."""

    def build(self, module, state):
        return RowParallelLinear(module.in_features, module.out_features, module.bias is not None,
                                 state=state, **_like(module))


@dataclass(frozen=True)
class HeadShardedRMSNorm(ParallelStyle):
    """An RMSNorm over all heads (one gain over heads x head_dim, Wan's QK-norm) -> TPRMSNorm:
    each rank holds its heads' gain and the sum of squares is all-reduced. nn.Identity (norm
    off in this checkpoint) stays as it is."""

    def build(self, module, state):
        if isinstance(module, nn.Identity):
            return module
        w = getattr(module, "weight", None)
        eps = getattr(module, "eps", None)
        if not isinstance(w, nn.Parameter) or w.dim() != 1 or eps is None:
            raise LayoutError(f"TP plan: HeadShardedRMSNorm needs an RMSNorm with a 1-D `weight` and "
                              f"`eps`, found {type(module).__name__}; fix the family's TP_PLAN")
        return TPRMSNorm(w.shape[0], eps, state=state, **_like(module))


def _regex(pattern: str) -> re.Pattern:
    return re.compile("^" + r"\.".join("[^.]+" if p == "*" else re.escape(p)
                                       for p in pattern.split(".")) + "$")


def plan_matches(model: nn.Module, plan: dict) -> dict:
    """{pattern: [module names]} of a plan against a model (for checks and `phyx parallel`)."""
    names = [n for n, _ in model.named_modules() if n]
    return {pat: [n for n in names if _regex(pat).match(n)] for pat in plan}


@torch.no_grad()
def parallelize(model: nn.Module, plan: dict, state: ParallelState | None = None) -> nn.Module:
    """Swap the plan's modules for TP layers under `state` (default: the current state); returns
    the model (changed in place). Nothing happens when tp == 1."""
    st = state if state is not None else get_parallel_state()
    if st.tp_size == 1:
        return model
    matches = plan_matches(model, plan)
    for pat, style in plan.items():
        if not matches[pat] and not style.optional:
            raise LayoutError(f"TP plan pattern {pat!r} matches no module of {type(model).__name__}; "
                              f"fix the family's TP_PLAN (or mark the style optional=True)")
    seen: dict = {}
    for pat, names in matches.items():
        for name in names:
            if name in seen:
                raise LayoutError(f"TP plan: {name!r} matches both {seen[name]!r} and {pat!r}")
            seen[name] = pat
            style = plan[pat]
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            old = getattr(parent, child)
            if isinstance(style, (Colwise, Rowwise)):
                _need_linear(style, old, name)
            new = style.build(old, st)
            if new is old:
                continue
            for pname, p in new.named_parameters(recurse=False):
                src = getattr(old, pname)
                if src.device.type != "meta":
                    spec = spec_of(p)
                    p.copy_(spec.take(src) if spec is not None else src)
                p.requires_grad_(src.requires_grad)
            setattr(parent, child, new)
    return model
