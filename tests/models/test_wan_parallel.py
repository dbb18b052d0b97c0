"""Wan / LingBot-World under TP, Ulysses SP and CFG parallel on real gloo ranks: every layout
gives the single-device answer. One pool of 2 ranks serves every test in this module."""
from __future__ import annotations

import pytest
import torch

from phyx.testing.multiproc import RankPool

WORLD = 2


@pytest.fixture(scope="module")
def pool():
    with RankPool(WORLD, env={"PHYX_BACKEND": "cpu"}, dist_timeout_s=60) as p:
        yield p


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    from phyx.models.wan import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("wan-par")
    return {v: str(make_tiny_checkpoint(root / v, v, seed=5, max_shard_bytes=50_000))
            for v in ("ti2v", "i2v-clip", "lingbot")}


def _inputs(cfg, seed=0):
    """Same tensors on every rank (host RNG). Latent grid 3x3x5 = 45 tokens: odd, so SP pads."""
    g = torch.Generator().manual_seed(seed)
    F_, H, W = 3, 6, 10
    x = torch.randn(2, cfg.out_dim, F_, H, W, generator=g)
    y = torch.randn(2, cfg.in_dim - cfg.out_dim, F_, H, W, generator=g) if cfg.in_dim != cfg.out_dim else None
    if cfg.variant == "ti2v":
        t = (torch.rand(2, F_ * (H // 2) * (W // 2), generator=g) * 1000).round()
    else:
        t = torch.tensor([980.0, 250.0])
    ctx = torch.randn(2, 16, cfg.text_dim, generator=g)
    ctx_null = torch.randn(2, 16, cfg.text_dim, generator=g)
    clip = torch.randn(2, 5, cfg.image_dim, generator=g) if cfg.image_dim else None
    camera = torch.randn(2, 384, F_, H, W, generator=g) * 0.5 if cfg.camera_channels else None
    return x, y, t, ctx, ctx_null, clip, camera


def _run(path, layout):
    """On each rank: the model under `layout` (cfg, sp, tp) and the single-device reference."""
    from phyx.models.wan import load_wan
    from phyx.parallel import (
        ParallelConfig,
        cfg_gather_combine,
        cfg_split,
        init_parallel,
        reset_parallel_state,
        single_device,
    )

    ref_model = load_wan(path, parallel=single_device())
    x, y, t, ctx, ctx_null, clip, camera = _inputs(ref_model.cfg)
    guidance = 4.0
    with torch.no_grad():
        cond = ref_model(x, t, ctx, y=y, clip_fea=clip, cam=camera)
        uncond = ref_model(x, t, ctx_null, y=y, clip_fea=clip, cam=camera)
        ref = uncond + guidance * (cond - uncond)
    st = init_parallel(ParallelConfig(*layout))
    try:
        model = load_wan(path)     # under TP each rank reads only its slices from disk
        q_shape = tuple(model.blocks[0].self_attn.q.weight.shape)
        rep = (lambda a: torch.cat([a, a]) if a is not None else None) if st.cfg_size == 1 else (lambda a: a)
        with torch.no_grad():
            pred = model(rep(x), rep(t), cfg_split(ctx, ctx_null), y=rep(y), clip_fea=rep(clip), cam=rep(camera))
            out = cfg_gather_combine(pred, guidance)
    finally:
        reset_parallel_state()
    return {"out": out, "ref": ref, "q_shape": q_shape}


@pytest.mark.parametrize("variant", ["ti2v", "i2v-clip", "lingbot"])
@pytest.mark.parametrize("layout", [(1, 1, 2), (1, 2, 1), (2, 1, 1)], ids=["tp2", "sp2", "cfg2"])
def test_parallel_equals_single_device(pool, ckpts, variant, layout):
    res = pool.run(_run, ckpts[variant], layout)
    for r, o in enumerate(res):
        rel = ((o["out"] - o["ref"]).norm() / o["ref"].norm()).item()
        assert rel < 1e-5, f"{variant} layout {layout} rank {r}: relative L2 {rel:.2e}"
        assert o["q_shape"] == ((32, 64) if layout[2] == 2 else (64, 64))
    torch.testing.assert_close(res[0]["out"], res[1]["out"], rtol=0, atol=0)


@pytest.mark.slow
def test_combined_layouts_on_four_ranks(ckpts):
    """sp x tp and cfg x tp together (4 ranks): the axes compose without changing the answer."""
    with RankPool(4, env={"PHYX_BACKEND": "cpu"}, dist_timeout_s=60) as pool4:
        for variant, layout in [("lingbot", (1, 2, 2)), ("ti2v", (2, 1, 2)), ("i2v-clip", (2, 2, 1))]:
            for r, o in enumerate(pool4.run(_run, ckpts[variant], layout)):
                rel = ((o["out"] - o["ref"]).norm() / o["ref"].norm()).item()
                assert rel < 1e-5, f"{variant} layout {layout} rank {r}: relative L2 {rel:.2e}"
