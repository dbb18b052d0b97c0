"""Each parallel mode on 2 gloo ranks (tp=2, sp=2 with an odd sequence, cfg=2) equals the
single-process run of the same weights and input; bad layouts fail at construction. One rank pool
per backend (cpu, npu-emulated) for the whole module.

Tolerance: fp32, relative L2 < 1e-5 (TP changes the summation order of the row-parallel matmuls
and the QK-norm; SP/CFG change nothing but the batch/sequence split: observed ~1e-7).
"""
from __future__ import annotations

import pytest
import torch

from phyx.errors import ParallelConfigError
from phyx.parallel.testing_block import reference, rel_l2, run_layout
from phyx.testing.multiproc import RankError, RankPool, rank_backend_params

WORLD = 2
TOL = 1e-5


@pytest.fixture(scope="module", params=rank_backend_params())
def pool(request):
    with RankPool(WORLD, env={"PHYX_BACKEND": request.param}, dist_timeout_s=30) as p:
        yield p


@pytest.mark.parametrize("layout,seq_len,heads,kv", [
    ((1, 1, 2), 7, 4, 2),    # tp=2, GQA 4:2 -> 2:1 per rank
    ((1, 2, 1), 7, 4, 2),    # sp=2, odd sequence: padded to 8, padding masked by key length
    ((1, 2, 1), 9, 4, 1),    # sp=2 with 1 KV head (< sp): KV heads repeated before all-to-all
    ((2, 1, 1), 6, 4, 2),    # cfg=2
])
def test_mode_matches_single_device(pool, layout, seq_len, heads, kv):
    ref = reference(3, seq_len, num_heads=heads, num_kv_heads=kv)
    outs = pool.run(run_layout, *layout, 3, seq_len, num_heads=heads, num_kv_heads=kv)
    for r, out in enumerate(outs):
        assert out.shape == ref.shape
        err = rel_l2(out, ref)
        assert err < TOL, f"rank {r} layout cfg,sp,tp={layout}: rel L2 {err:.2e}"


def _planted_mistake(kind):
    """run_layout with one deliberate parallel bug, to show the comparison catches it."""
    import phyx.parallel.layers as L
    import phyx.parallel.testing_block as TB

    saved = (TB.SequenceParallel.attention, L.comm.all_reduce)
    if kind == "padding unmasked":   # keys up to the padded length: the padding is attended
        TB.SequenceParallel.attention = lambda self, q, k, v, **kw: saved[0](
            self, q, k, v, **{**kw, "valid_len": self.local_len * self.size})
        layout = (1, 2, 1)
    else:  # "qk-norm not all-reduced": each TP rank normalises over its own heads only
        def local_sumsq(t, op="sum", group=None, **kw):
            return t * L.get_parallel_state().tp_size if t.shape[-1] == 1 else saved[1](t, op, group, **kw)
        L.comm.all_reduce = local_sumsq
        layout = (1, 1, 2)
    try:
        return run_layout(*layout, 3, 7)
    finally:
        TB.SequenceParallel.attention, L.comm.all_reduce = saved


@pytest.mark.parametrize("kind", ["padding unmasked", "qk-norm not all-reduced"])
def test_comparison_catches_planted_mistakes(pool, kind):
    ref = reference(3, 7)
    for out in pool.run(_planted_mistake, kind):
        assert rel_l2(out, ref) > 100 * TOL


# --- layers one by one -------------------------------------------------------------------

def _layers():
    from phyx import ops
    from phyx.parallel import (
        ColumnParallelLinear,
        ParallelConfig,
        RowParallelLinear,
        init_parallel,
        load_full_state_dict,
        reset_parallel_state,
        tp_rms_norm,
    )
    from phyx.sharding import spec_of

    st = init_parallel(ParallelConfig(tp=2))
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(3, 5, 8, generator=g)
        w_full = torch.randn(12, 8, generator=g)
        b_full = torch.randn(12, generator=g)
        col = ColumnParallelLinear(8, 12, gather_output=True, sections=(4, 8))
        load_full_state_dict(col, {"weight": w_full, "bias": b_full})
        out = {"col": col(x), "col_spec": spec_of(col.weight), "col_local_shape": tuple(col.weight.shape)}
        row = RowParallelLinear(12, 6, input_is_parallel=False)
        w2, b2 = torch.randn(6, 12, generator=g), torch.randn(6, generator=g)
        load_full_state_dict(row, {"weight": w2, "bias": b2})
        out["row"] = row(out["col"])
        h = torch.randn(2, 3, 16, generator=g)
        wn = torch.randn(16, generator=g)
        r = st.tp_rank
        out["rms"] = tp_rms_norm(h.chunk(2, -1)[r], wn.chunk(2)[r], 1e-6, 16)
        out["rms_ref"] = ops.reference.rms_norm(h, wn, 1e-6).chunk(2, -1)[r]
        return out
    finally:
        reset_parallel_state()


def test_tp_layers(pool):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 8, generator=g)
    w, b = torch.randn(12, 8, generator=g), torch.randn(12, generator=g)
    w2, b2 = torch.randn(6, 12, generator=g), torch.randn(6, generator=g)
    y = x @ w.T + b
    for r, o in enumerate(pool.run(_layers)):
        torch.testing.assert_close(o["col"], y, rtol=1e-5, atol=1e-5)  # sections re-ordered back
        torch.testing.assert_close(o["row"], y @ w2.T + b2, rtol=1e-5, atol=1e-4)
        assert o["col_spec"].rank == r and o["col_spec"].sections == (4, 8)
        assert o["col_local_shape"] == (6, 8)
        torch.testing.assert_close(o["rms"], o["rms_ref"], rtol=1e-6, atol=1e-6)


def _load_slices_from_file(path):
    from phyx.io.checkpoint import load_state, open_checkpoint
    from phyx.parallel import ColumnParallelLinear, ParallelConfig, init_parallel, reset_parallel_state

    init_parallel(ParallelConfig(tp=2))
    try:
        m = ColumnParallelLinear(4, 8, sections=(4, 4))  # packed [gate | up]
        load_state(m, open_checkpoint(path))
        return m.weight.detach().clone()
    finally:
        reset_parallel_state()


def test_each_rank_loads_its_slice_of_a_packed_weight(pool, tmp_path):
    from phyx.io.checkpoint import save_safetensors_atomic

    w = torch.arange(32, dtype=torch.float32).view(8, 4)  # rows 0-3 gate, 4-7 up
    save_safetensors_atomic({"weight": w, "bias": torch.zeros(8)}, tmp_path / "m.safetensors")
    got = pool.run(_load_slices_from_file, str(tmp_path / "m.safetensors"))
    torch.testing.assert_close(got[0], torch.cat([w[0:2], w[4:6]]))  # [gate_0 | up_0]
    torch.testing.assert_close(got[1], torch.cat([w[2:4], w[6:8]]))


def _cfg_warns():
    import warnings

    from phyx.parallel import ParallelConfig, cfg_gather_combine, init_parallel, reset_parallel_state

    init_parallel(ParallelConfig(cfg=2))
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            cfg_gather_combine(torch.ones(1, 2), 1.0)
        return [str(x.message) for x in w]
    finally:
        reset_parallel_state()


def test_cfg2_with_guidance_at_most_1_warns(pool):
    for msgs in pool.run(_cfg_warns):
        assert any("wasted" in m for m in msgs)


# --- bad layouts fail at construction, on every rank, with a clear message ------------------

def _bad(kind):
    from torch import distributed as _  # noqa: F401  (tests may; model code may not)

    from phyx import comm
    from phyx.parallel import ParallelConfig, init_parallel, reset_parallel_state
    from phyx.parallel.testing_block import TinyDiTBlock

    try:
        if kind == "world":
            init_parallel(ParallelConfig(tp=4))
        elif kind == "heads":
            TinyDiTBlock(dim=24, num_heads=3, num_kv_heads=3, state=init_parallel(ParallelConfig(tp=2)))
        elif kind == "kv":
            TinyDiTBlock(num_heads=4, num_kv_heads=1, state=init_parallel(ParallelConfig(tp=2)))
        elif kind == "ulysses":
            TinyDiTBlock(dim=24, num_heads=3, num_kv_heads=3, state=init_parallel(ParallelConfig(sp=2)))
        elif kind == "mesh":
            mesh = comm.init_mesh((2, 1, 1), ("sp", "cfg", "tp"))
            init_parallel(ParallelConfig(sp=2), mesh=mesh)
    finally:
        reset_parallel_state()


@pytest.mark.parametrize("kind,match", [
    ("world", r"world size 2 does not equal cfg x sp x tp = 1 x 1 x 4 = 4"),
    ("heads", r"tp=2 does not divide the 3 attention heads"),
    ("kv", r"tp=2 does not divide the 1 KV heads"),
    ("ulysses", r"heads must divide by ulysses x tp = 2.*ulysses=1, ring=2"),
    ("mesh", r"does not match .*needs dims named \('cfg', 'sp', 'tp'\)"),
])
def test_bad_layout_fails_at_construction(pool, kind, match):
    with pytest.raises(RankError, match=match) as ei:
        pool.run(_bad, kind)
    assert "ParallelConfigError" in str(ei.value) and "rank 1" in str(ei.value)


# --- single-process checks ---------------------------------------------------------------

def test_config_validation_and_trivial_state():
    from phyx.parallel import ParallelConfig, get_parallel_state

    with pytest.raises(ParallelConfigError, match="cfg must be 1 or 2"):
        ParallelConfig(cfg=3)
    with pytest.raises(ParallelConfigError, match="positive integer"):
        ParallelConfig(sp=0)
    c = ParallelConfig(2, 2, 2)
    assert c.world_size == 8
    # tp innermost, then sp, then cfg
    assert [tuple(c.coords(r).values()) for r in (0, 1, 2, 5, 7)] == \
        [(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 1), (1, 1, 1)]
    st = get_parallel_state()
    assert st.is_trivial and st.tp_size == st.sp_size == st.cfg_size == 1 and st.tp_group is None


def test_config_sp_is_ulysses_times_ring():
    from phyx.parallel import ParallelConfig, check_layout

    assert ParallelConfig(sp=4) == ParallelConfig(ulysses=4) and ParallelConfig(sp=4).sp_mode == "ulysses"
    c = ParallelConfig(ulysses=2, ring=2)
    assert (c.sp, c.sp_mode, c.world_size) == (4, "usp", 4)
    assert ParallelConfig(sp=4, ring=2).ulysses == 2 and ParallelConfig(ring=4).sp_mode == "ring"
    assert ParallelConfig(1, 2, 1) == ParallelConfig(ulysses=2)      # positional (cfg, sp, tp) as before
    with pytest.raises(ParallelConfigError, match="sp=4 must equal ulysses x ring = 2 x 1"):
        ParallelConfig(sp=4, ulysses=2, ring=1)
    with pytest.raises(ParallelConfigError, match="not a multiple of ring=3"):
        ParallelConfig(sp=4, ring=3)
    check_layout(2, 1, ParallelConfig(ulysses=2, ring=4))             # sp 8 > 2 heads: fine with ring
    with pytest.raises(ParallelConfigError, match=r"ulysses=8.*ParallelConfig\(ulysses=2, ring=4\)"):
        check_layout(2, 1, ParallelConfig(sp=8))                       # the error names the fix


def test_tp1_layers_are_plain_linear():
    from phyx.parallel import ColumnParallelLinear, RowParallelLinear

    lin = torch.nn.Linear(8, 6)
    for cls in (ColumnParallelLinear, RowParallelLinear):
        m = cls(8, 6)
        m.load_state_dict(lin.state_dict())
        x = torch.randn(2, 8)
        assert torch.equal(m(x), lin(x)) and isinstance(m, torch.nn.Linear)
        assert not hasattr(m.weight, "phyx_shard")


def test_shared_noise_is_reproducible():
    from phyx.parallel import shared_noise

    a, b = shared_noise((2, 3), 7), shared_noise((2, 3), 7)
    assert torch.equal(a, b) and not torch.equal(a, shared_noise((2, 3), 8))


def test_plan_cli_and_hccl_cost(capsys):
    from phyx.cli import main
    from phyx.parallel import ParallelConfig
    from phyx.parallel.plan import hccl_buffer_cost

    assert main(["parallel", "plan", "--model", "wan2.1-1.3b-480p", "--layout", "2x2x2"]) == 0
    text = capsys.readouterr().out
    assert "tp_all_reduce" in text and "sp_all_to_all" in text and "cfg_all_gather" in text
    # 4 communicators (world, cfg, sp, tp) x 2 x 200 MB
    assert "1600 MB per rank" in text
    assert hccl_buffer_cost(ParallelConfig(1, 1, 1))["mb_per_rank"] == 0
    assert hccl_buffer_cost(ParallelConfig(1, 4, 1), buffsize_mb=50)["mb_per_rank"] == 200
    assert main(["parallel", "plan", "--layout", "1x1x8"]) == 2  # clear error, not a traceback
    assert "tp=8 does not divide the 12 attention heads" in capsys.readouterr().err
