"""Cosmos-Predict2 and Cosmos3 under CFG / Ulysses / TP equal the single-device runs (4 gloo
ranks on the CPU, one pool for the module, several layouts per pool)."""
from __future__ import annotations

import pytest
import torch

from phyx.models import cosmos3 as c3
from phyx.models import cosmos_predict2 as cp
from phyx.testing import rel_l2
from phyx.testing.multiproc import RankPool

P2_LAYOUTS = [(1, 4, 1), (2, 2, 1), (1, 2, 2)]                           # (cfg, sp, tp); world 4
C3_LAYOUTS = [(1, 1, 4), (1, 4, 1), (1, 2, 2), (2, 1, 2), (2, 2, 1)]


def _p2_inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 3, 6, 10, generator=g)          # 3*3*5 = 45 tokens: uneven over sp
    cond = torch.randn(1, 4, 3, 6, 10, generator=g)
    text, neg = torch.randn(1, 7, 24, generator=g), torch.randn(1, 7, 24, generator=g)
    return x, cond, text, neg


def _p2_run(path):
    x, cond, text, neg = _p2_inputs()
    m = cp.load(path)
    with torch.no_grad():
        return cp.guided_x0(m, x, 3.0, text, neg, 7.0, cond_latents=cond, num_conditional_frames=1, fps=16)


def _c3_inputs():
    g = torch.Generator().manual_seed(1)
    return dict(cond_ids=torch.randint(0, 64, (7,), generator=g), uncond_ids=torch.randint(0, 64, (4,), generator=g),
                media=dict(vision=torch.randn(4, 3, 4, 6, generator=g), vision_timesteps=600.0,
                           vision_noisy_frames=[1, 2], sound=torch.randn(6, 5, generator=g), sound_timesteps=600.0,
                           action=torch.randn(2, 5, generator=g), action_domain=1, action_noisy_frames=[0, 1],
                           action_timesteps=600.0))


def _c3_run(path):
    from phyx.models.cosmos3.guidance import BranchCaches, guided_step
    inp = _c3_inputs()
    m = c3.load(path)
    caches = BranchCaches()
    with torch.no_grad():
        a = guided_step(m, inp["media"], inp["cond_ids"], inp["uncond_ids"], 4.0, caches=caches)
        b = guided_step(m, inp["media"], inp["cond_ids"], inp["uncond_ids"], 4.0, caches=caches)  # cached K/V
    return a, b


def _in_layouts(fn, path, layouts):
    from phyx.parallel import ParallelConfig, init_parallel, reset_parallel_state
    out = {}
    for cfg, sp, tp in layouts:
        init_parallel(ParallelConfig(cfg=cfg, sp=sp, tp=tp))
        try:
            out[(cfg, sp, tp)] = fn(path)
        finally:
            reset_parallel_state()
    return out


def _both(p2_path, c3_path):
    return _in_layouts(_p2_run, p2_path, P2_LAYOUTS), _in_layouts(_c3_run, c3_path, C3_LAYOUTS)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("par")
    return (cp.make_tiny_checkpoint(root / "p2", seed=3, variant="video2world", num_attention_heads=4),
            c3.make_tiny_checkpoint(root / "c3", seed=5))


@pytest.fixture(scope="module")
def results(ckpts):
    with RankPool(4, env={"PHYX_BACKEND": "cpu"}) as pool:
        return pool.run(_both, str(ckpts[0]), str(ckpts[1]))


@pytest.mark.parametrize("layout", P2_LAYOUTS)
def test_predict2_parallel_equals_single_device(results, ckpts, layout):
    with torch.no_grad():
        ref = _p2_run(ckpts[0])
    for rank, (p2, _) in enumerate(results):
        assert rel_l2(p2[layout], ref) < 1e-5, f"rank {rank} layout {layout}"


@pytest.mark.parametrize("layout", C3_LAYOUTS)
def test_cosmos3_parallel_equals_single_device(results, ckpts, layout):
    ref, _ = _c3_run(ckpts[1])
    for rank, (_, c3r) in enumerate(results):
        a, b = c3r[layout]
        for key in ("vision", "sound", "action"):
            assert rel_l2(a[key], ref[key]) < 1e-5, f"rank {rank} layout {layout} {key}"
            assert torch.equal(a[key], b[key])


def test_layouts_the_heads_cannot_split_fail_at_construction():
    from phyx.errors import ParallelConfigError
    from phyx.parallel import ParallelConfig, ParallelState

    def build(**kw):
        c3.Cosmos3Omni(c3.tiny_config(), ParallelState(ParallelConfig(**kw)))   # 16 query, 8 KV heads

    with pytest.raises(ParallelConfigError, match="tp=16 does not divide the 8 KV heads"):
        build(tp=16)
    with pytest.raises(ParallelConfigError, match=r"ulysses x tp = 64.*ulysses=8, ring=4"):
        build(tp=2, sp=32)      # 8 heads per TP rank cannot split 32 ways: the error names the fix
    with pytest.raises(ParallelConfigError, match="Cosmos-Predict2"):
        cp.Predict2DiT(cp.tiny_config(), ParallelState(ParallelConfig(tp=3)))


def test_tp_plan_shards_predict2_from_its_plan():
    """The declarative plan is what shards the model: every planned linear is a TP layer holding
    1/tp of the weight with a ShardSpec mark; an unplanned one stays whole."""
    from phyx.models.cosmos_predict2.plan import TP_PLAN
    from phyx.parallel import ColumnParallelLinear, ParallelConfig, ParallelState, RowParallelLinear
    from phyx.parallel.styles import plan_matches
    from phyx.sharding import spec_of

    cfg = cp.tiny_config()
    st = ParallelState(ParallelConfig(tp=2))            # no groups needed to build
    m = cp.Predict2DiT(cfg, st)
    ref = cp.Predict2DiT(cfg, ParallelState(ParallelConfig()))
    matched = plan_matches(ref, TP_PLAN)
    assert all(matched.values()), {k: v for k, v in matched.items() if not v}
    for pat, names in matched.items():
        for name in names:
            mod, full = m.get_submodule(name), ref.get_submodule(name)
            assert isinstance(mod, (ColumnParallelLinear, RowParallelLinear)), name
            assert mod.weight.numel() * 2 == full.weight.numel() and spec_of(mod.weight) is not None, name
    assert type(m.proj_out) is torch.nn.Linear and spec_of(m.proj_out.weight) is None
