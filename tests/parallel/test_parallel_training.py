"""Training under TP and Ulysses: gradients equal the single-device gradients.

The collectives in phyx.comm are autograd-aware (row-parallel all-reduce: identity backward;
column-parallel input and the SP shard point: gradients summed over the group; all-to-all: the
inverse exchange; all-gather: this rank's slice), and sync_replicated_grads sums the SP ranks'
partial parameter gradients. One 2-rank pool serves the module."""
import pytest
import torch

from phyx.parallel import (
    ParallelConfig,
    ParallelState,
    init_parallel,
    load_full_state_dict,
    reset_parallel_state,
    sync_replicated_grads,
)
from phyx.parallel.testing_block import TinyDiTBlock, make_case, rel_l2, run_block
from phyx.sharding import spec_of
from phyx.testing.multiproc import RankPool

SEQ = 7  # not a multiple of sp: the padding path is part of the backward too
LAYOUTS = {"tp2": (1, 1, 2), "sp2": (1, 2, 1)}


def _grads(state):
    sd, inp, kw = make_case(3, SEQ)
    block = TinyDiTBlock(**kw, state=state)
    load_full_state_dict(block, sd)
    x = inp["x"].clone().requires_grad_()
    out = run_block(block, x, inp["e"], inp["ctx_cond"], inp["cos"], inp["sin"])
    (out.square().mean() + out.sum() * 1e-3).backward()
    synced = sync_replicated_grads(block, state=state)
    params = {n: (p.grad.detach().clone(), spec_of(p)) for n, p in block.named_parameters()}
    return out.detach(), x.grad.detach().clone(), params, synced


def _rank_grads(layout):
    st = init_parallel(ParallelConfig(*layout))
    try:
        return _grads(st)
    finally:
        reset_parallel_state()


@pytest.fixture(scope="module")
def pool():
    with RankPool(2, env={"PHYX_BACKEND": "cpu"}) as p:
        yield p


@pytest.fixture(scope="module")
def reference():
    import phyx

    phyx.set_backend("cpu", "fast")
    return _grads(ParallelState(ParallelConfig()))


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_gradients_equal_single_device(pool, reference, name):
    ref_out, ref_dx, ref_params, _ = reference
    for rank, (out, dx, params, synced) in enumerate(pool.run(_rank_grads, LAYOUTS[name])):
        assert rel_l2(out, ref_out) < 1e-5, (name, rank)
        assert rel_l2(dx, ref_dx) < 1e-5, (name, rank, "input gradient")
        assert (synced > 0) == (name == "sp2")
        assert params.keys() == ref_params.keys()
        for pname, (g, spec) in params.items():
            full = ref_params[pname][0]
            want = spec.take(full) if spec is not None else full
            assert rel_l2(g, want) < 1e-5, (name, rank, pname, rel_l2(g, want))


def test_ring_attention_refuses_backward():
    from phyx.errors import UnsupportedArgumentError
    from phyx.parallel import ring_attention

    q = torch.randn(1, 4, 2, 8, requires_grad=True)
    with pytest.raises(UnsupportedArgumentError, match="forward-only"):
        ring_attention(q, q, q)
