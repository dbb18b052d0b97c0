"""The families' declarative parallel plans (phyx/models/<family>/plan.py), checked in one
process: every TP pattern names real modules, parallelize() turns exactly those into TP layers
holding this rank's slice of the single-device weight (with a ShardSpec mark for the loader),
every SP attention pattern names real modules, and a wrong plan fails with the pattern named."""
from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from phyx.errors import LayoutError
from phyx.parallel import ColumnParallelLinear, ParallelConfig, ParallelState, RowParallelLinear, TPRMSNorm
from phyx.parallel.styles import Colwise, parallelize, plan_matches
from phyx.sharding import spec_of


def _wan():
    from phyx.models.wan import WanModel, get_config
    return lambda st: WanModel(get_config("tiny-i2v-clip"), st)


def _predict2():
    from phyx.models import cosmos_predict2 as cp
    return lambda st: cp.Predict2DiT(cp.tiny_config(), st)


def _cosmos3():
    from phyx.models import cosmos3 as c3
    return lambda st: c3.Cosmos3Omni(c3.tiny_config(), st)


FAMILIES = {"wan": _wan, "cosmos_predict2": _predict2, "cosmos3": _cosmos3}


def _state(rank, tp=2):
    return ParallelState(ParallelConfig(tp=tp), rank=rank, coords={"cfg": 0, "sp": 0, "tp": rank})


@pytest.mark.parametrize("family", list(FAMILIES))
def test_plan_shards_exactly_the_planned_modules(family):
    plan = importlib.import_module(f"phyx.models.{family}.plan")
    build = FAMILIES[family]()
    torch.manual_seed(0)
    full = build(ParallelState(ParallelConfig()))
    matched = plan_matches(full, plan.TP_PLAN)
    assert all(v for p, v in matched.items() if not plan.TP_PLAN[p].optional), matched
    planned = {n for v in matched.values() for n in v}
    for rank in (0, 1):
        torch.manual_seed(0)
        model = build(_state(rank))
        # the sharded model is the single-device one with the planned modules swapped in place
        model.load_state_dict({k: spec_of(p).take(full.state_dict()[k]) if spec_of(p) is not None
                               else full.state_dict()[k] for k, p in model.state_dict(keep_vars=True).items()})
        for name, mod in model.named_modules():
            tp_layer = isinstance(mod, (ColumnParallelLinear, RowParallelLinear, TPRMSNorm))
            assert tp_layer == (name in planned and not isinstance(mod, nn.Identity)), name
            if tp_layer:
                w, w_full = mod.weight, full.get_submodule(name).weight
                assert w.numel() * 2 == w_full.numel() and spec_of(w).rank == rank, name
    for pat in plan.SP_PLAN.attention:
        assert plan_matches(full, {pat: None})[pat], f"SP_PLAN.attention {pat!r} matches nothing"


def test_parallelize_slices_real_weights_and_refuses_a_wrong_plan():
    m = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 4))
    w0 = m[0].weight.detach().clone()
    parallelize(m, {"0": Colwise(sections=(2, 4))}, _state(1))
    assert isinstance(m[0], ColumnParallelLinear)
    assert torch.equal(m[0].weight, torch.cat([w0[1:2], w0[4:6]]))      # rank 1 of each section
    with pytest.raises(LayoutError, match="'blocks.*.atn.q' matches no module"):
        parallelize(nn.Sequential(nn.Linear(2, 2)), {"blocks.*.atn.q": Colwise()}, _state(0))
    with pytest.raises(LayoutError, match="needs an nn.Linear, found GELU"):
        parallelize(nn.Sequential(nn.GELU()), {"0": Colwise()}, _state(0))
    lin = nn.Sequential(nn.Linear(2, 2))
    assert parallelize(lin, {"9": Colwise()}, ParallelState(ParallelConfig())) is lin   # tp 1: no-op
