"""Parity of parallel layouts at model level: a 2-rank TP and a 2-rank Ulysses-SP run of tiny Wan,
captured layer by layer with shards merged back into full tensors, compared with the single-device
run. Clean layouts pass; a TP shard loaded out of order and Ulysses padding left unmasked are each
caught and located at the right layer. One pool of 2 gloo ranks serves the whole module."""
from __future__ import annotations

import pytest
import torch

from phyx.testing.multiproc import RankPool
from phyx.tools.parity import metrics as M
from phyx.tools.parity.compare import compare_runs, format_compare

MODEL = "tiny-wan-t2v"
SEQ = 45  # 3 x 3 x 5 latent tokens: odd, so SP=2 pads one token


@pytest.fixture(scope="module")
def pool():
    with RankPool(2, env={"PHYX_BACKEND": "cpu"}, dist_timeout_s=60) as p:
        yield p


def _swap_ffn_shard(model, spec):
    """Planted: blocks.1.ffn.0 (column parallel) holds the other rank's rows."""
    from phyx.models.common.init import init_seeded_
    from phyx.models.common.meta import on_meta
    from phyx.models.wan import WanModel
    from phyx.parallel import get_parallel_state, single_device
    from phyx.sharding import ShardSpec

    st = get_parallel_state()
    full = init_seeded_(on_meta(lambda: WanModel(model.cfg, single_device())), spec.seed).state_dict()
    wrong = ShardSpec(0, st.tp_size - 1 - st.tp_rank, st.tp_size)
    with torch.no_grad():
        for name in ("blocks.1.ffn.0.weight", "blocks.1.ffn.0.bias"):
            model.get_parameter(name).copy_(wrong.take(full[name]))
    return model


def _ranks(layout, plant=None):
    """On each rank: the single-device run and the parallel run (shards merged)."""
    import dataclasses

    from phyx.parallel import ParallelConfig, SequenceParallel
    from phyx.tools.parity.model import get_model_spec, record_run
    from phyx.tools.parity.parallel import record_parallel_run

    torch.set_num_threads(1)
    spec = get_model_spec(MODEL)
    single = record_run(spec, None, "fp32")
    orig_attn = SequenceParallel.attention
    if plant == "tp_shard_order":
        build = spec.build
        spec = dataclasses.replace(spec, build=lambda: _swap_ffn_shard(build(), spec))
    elif plant == "ulysses_padding_unmasked":
        # the Wan2.1 xDiT flaw: padded keys not masked out by length
        SequenceParallel.attention = lambda self, q, k, v, **kw: orig_attn(
            self, q, k, v, **{**kw, "valid_len": self.local_len * self.size})
    try:
        par = record_parallel_run(spec, ParallelConfig(*layout), "fp32", seq_len=SEQ)
    finally:
        SequenceParallel.attention = orig_attn
    return single, par


def _report(pool, layout, plant=None):
    res = pool.run(_ranks, layout, plant)
    (single, par), (_, par1) = res
    for k, t in par.tensors.items():  # every rank ends with the same merged tensors
        assert torch.equal(t, par1.tensors[k]), k
    return compare_runs(single, par), par


@pytest.mark.parametrize("layout", [(1, 1, 2), (1, 2, 1)], ids=["tp2", "sp2"])
def test_clean_parallel_layout_matches_single_device(pool, layout):
    rep, par = _report(pool, layout)
    assert not rep.failed, format_compare(rep)
    assert par.manifest["environment"]["parallel"]["tp" if layout[2] == 2 else "sp"] == 2
    assert all(r.evidence == "accumulated" for r in rep.rows)
    # the merged tensors have the full single-device shapes
    L = par.layer("blocks.0.self_attn.q" if layout[2] == 2 else "blocks.0.self_attn")
    assert L["shapes"]["out"] == [2, SEQ, 64]
    if layout[2] == 2:  # a row-parallel input shard was merged too
        assert par.layer("blocks.0.ffn.2")["shapes"]["in.arg.0"] == [2, SEQ, 128]
    else:               # RoPE tables sliced per rank, merged back on dim 0
        assert par.layer("blocks.0.self_attn")["shapes"]["in.arg.1"] == [SEQ, 8]


def test_tp_shard_out_of_order_located(pool):
    rep, _ = _report(pool, (1, 1, 2), "tp_shard_order")
    assert rep.failed and rep.first_divergence == "blocks.1.ffn.0", format_compare(rep)
    rows = {r.name: r for r in rep.rows}
    assert rows["blocks.0"].status == M.PASS and rows["blocks.1.self_attn"].status == M.PASS
    assert rows["blocks.1.ffn"].status == M.FAIL


def test_ulysses_padding_unmasked_located(pool):
    rep, _ = _report(pool, (1, 2, 1), "ulysses_padding_unmasked")
    assert rep.failed and rep.first_divergence == "blocks.0.self_attn", format_compare(rep)
    rows = {r.name: r for r in rep.rows}
    assert rows["blocks.0.self_attn.q"].status == M.PASS   # projections fine, attention is not
    assert rows["rope_tables"].status == M.PASS
