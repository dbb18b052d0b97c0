"""USP (Ulysses x ring) and pure ring sequence parallelism for all three families, on 4 gloo
ranks: `ulysses 2 x ring 2` and `ring 4` give the single-device answer (fp32, rel L2 < 1e-5).

- Wan: TI2V with per-token timesteps, and LingBot-World with camera tokens (both sharded as per-
  token conditioning); 45 tokens, padded to 48;
- Cosmos-Predict2: 2 attention heads, so sp = 4 exceeds the head count (ring carries the rest);
  per-frame modulation through each token's frame index; a guided x0 (two forwards);
- Cosmos3: causal ring attention in the understanding tower and the two-sequence generation
  attention (whole text K/V as a prefix of the sharded media keys), with the text K/V cache
  reused at a second step.
One pool for the module, one call: every family and layout in one round trip. Ring attention
needs the attention LSE, which on the CPU only the reference kernel gives: both sides run it.
"""
from __future__ import annotations

import pytest
import torch

from phyx.testing import rel_l2
from phyx.testing.multiproc import RankPool

TOL = 1e-5
LAYOUTS = {"ulysses2xring2": dict(ulysses=2, ring=2), "ring4": dict(ring=4)}


def _wan_inputs(cfg):
    g = torch.Generator().manual_seed(0)
    F_, H, W = 3, 6, 10
    x = torch.randn(1, cfg.out_dim, F_, H, W, generator=g)
    y = torch.randn(1, cfg.in_dim - cfg.out_dim, F_, H, W, generator=g) if cfg.in_dim != cfg.out_dim else None
    t = ((torch.rand(1, F_ * (H // 2) * (W // 2), generator=g) * 1000).round() if cfg.variant == "ti2v"
         else torch.tensor([700.0]))
    ctx = torch.randn(1, 16, cfg.text_dim, generator=g)
    cam = torch.randn(1, 384, F_, H, W, generator=g) * 0.5 if cfg.camera_channels else None
    return x, t, ctx, y, cam


def _wan(path):
    from phyx.models.wan import load_wan

    m = load_wan(path)
    x, t, ctx, y, cam = _wan_inputs(m.cfg)
    with torch.no_grad():
        return m(x, t, ctx, y=y, cam=cam)


def _p2(path):
    from phyx.models import cosmos_predict2 as cp

    g = torch.Generator().manual_seed(1)
    x, cond = torch.randn(1, 4, 3, 6, 10, generator=g), torch.randn(1, 4, 3, 6, 10, generator=g)
    text, neg = torch.randn(1, 7, 24, generator=g), torch.randn(1, 7, 24, generator=g)
    m = cp.load(path)
    with torch.no_grad():
        return cp.guided_x0(m, x, 3.0, text, neg, 7.0, cond_latents=cond, num_conditional_frames=1, fps=16)


def _c3(path):
    from phyx.models import cosmos3 as c3
    from phyx.models.cosmos3.guidance import BranchCaches, guided_step

    g = torch.Generator().manual_seed(2)
    ids, neg = torch.randint(0, 64, (7,), generator=g), torch.randint(0, 64, (5,), generator=g)
    media = dict(vision=torch.randn(4, 3, 4, 6, generator=g), vision_timesteps=600.0, vision_noisy_frames=[1, 2],
                 sound=torch.randn(6, 5, generator=g), sound_timesteps=600.0, action=torch.randn(2, 5, generator=g),
                 action_domain=1, action_noisy_frames=[0, 1], action_timesteps=600.0)
    later = {**media, "vision_timesteps": 200.0, "sound_timesteps": 200.0, "action_timesteps": 200.0}
    m = c3.load(path)
    caches = BranchCaches()
    with torch.no_grad():
        a = guided_step(m, media, ids, neg, 4.0, caches=caches)
        b = guided_step(m, later, ids, neg, 4.0, caches=caches)     # on the cached text K/V
    return a, b


RUNNERS = {"wan-ti2v": _wan, "wan-lingbot": _wan, "predict2": _p2, "cosmos3": _c3}


def _all(paths, layouts=None):
    import phyx
    from phyx.parallel import ParallelConfig, init_parallel, reset_parallel_state

    policy = phyx.get_policy()
    phyx.set_policy("reference")
    out = {}
    try:
        for name, kw in (layouts or LAYOUTS).items():
            st = init_parallel(ParallelConfig(**kw))
            try:
                out[name] = {fam: fn(paths[fam]) for fam, fn in RUNNERS.items()}
                out[name]["_mode"] = st.config.sp_mode
            finally:
                reset_parallel_state()
    finally:
        phyx.set_policy(policy)
    return out


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    from phyx.models import cosmos3 as c3
    from phyx.models import cosmos_predict2 as cp
    from phyx.models.wan import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("usp")
    return {"wan-ti2v": str(make_tiny_checkpoint(root / "ti2v", "ti2v", seed=5)),
            "wan-lingbot": str(make_tiny_checkpoint(root / "lingbot", "lingbot", seed=6)),
            "predict2": str(cp.make_tiny_checkpoint(root / "p2", seed=3, variant="video2world",
                                                    num_attention_heads=2)),
            "cosmos3": str(c3.make_tiny_checkpoint(root / "c3", seed=5))}


@pytest.fixture(scope="module")
def results(ckpts):
    with RankPool(4, env={"PHYX_BACKEND": "cpu"}, dist_timeout_s=60) as pool:
        return pool.run(_all, ckpts)


@pytest.fixture(scope="module")
def references(ckpts):
    import phyx

    policy = phyx.get_policy()
    phyx.set_policy("reference")
    try:
        return {fam: fn(ckpts[fam]) for fam, fn in RUNNERS.items()}
    finally:
        phyx.set_policy(policy)


def _flat(out):
    if isinstance(out, torch.Tensor):
        return {"": out}
    if isinstance(out, dict):
        return {f"{k}.{kk}": v for k, o in out.items() if o is not None for kk, v in _flat(o).items()}
    return {f"{i}.{kk}": v for i, o in enumerate(out) for kk, v in _flat(o).items()}


@pytest.mark.parametrize("family", list(RUNNERS))
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_usp_and_ring_equal_single_device(results, references, family, layout):
    ref = _flat(references[family])
    assert ref, family
    for rank, res in enumerate(results):
        assert res[layout]["_mode"] == ("usp" if layout == "ulysses2xring2" else "ring")
        got = _flat(res[layout][family])
        assert got.keys() == ref.keys()
        for key, want in ref.items():
            err = rel_l2(got[key], want)
            assert err < TOL, f"{family} {layout} rank {rank} {key}: rel L2 {err:.2e}"


def test_predict2_case_has_more_sp_ranks_than_heads(ckpts):
    from phyx.models.cosmos_predict2 import Predict2Config

    cfg = Predict2Config.from_json(f"{ckpts['predict2']}/config.json")
    assert cfg.num_attention_heads < 4 == LAYOUTS["ring4"]["ring"]
