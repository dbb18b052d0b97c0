"""Cosmos3 under tp=8 (each TP rank holds one of the 8 KV heads and 2 of the 16 query heads)
equals the single-device run, fp32 on 8 gloo CPU ranks: one plain forward, one guided step
that builds the understanding-tower K/V cache, and one at another timestep that reuses it
(checked against a single-device step with a fresh cache). One pool, one call."""
from __future__ import annotations

import pytest
import torch

from phyx.models import cosmos3 as c3
from phyx.testing import rel_l2
from phyx.testing.multiproc import RankPool

TOL = 1e-5
TP = 8


def _inputs():
    g = torch.Generator().manual_seed(2)
    return dict(ids=torch.randint(0, 64, (6,), generator=g), uncond_ids=torch.randint(0, 64, (3,), generator=g),
                media=dict(vision=torch.randn(4, 3, 4, 5, generator=g), vision_timesteps=450.0,
                           vision_noisy_frames=[1, 2], sound=torch.randn(6, 4, generator=g), sound_timesteps=450.0,
                           action=torch.randn(2, 5, generator=g), action_domain=2, action_noisy_frames=[1],
                           action_timesteps=450.0))


def _later(media):
    return {**media, "vision_timesteps": 120.0, "sound_timesteps": 120.0, "action_timesteps": 120.0}


def _run(path, fresh_cache_for_later=False):
    """Plain forward, a guided step, and a guided step at a later timestep (on the cached text
    K/V, or with a fresh cache for the reference)."""
    from phyx.models.cosmos3.guidance import BranchCaches, guided_step
    inp = _inputs()
    m = c3.load(path)
    caches = BranchCaches()
    with torch.no_grad():
        plain = m(inp["ids"], fps=16.0, **inp["media"])
        first = guided_step(m, inp["media"], inp["ids"], inp["uncond_ids"], 3.5, caches=caches)
        n_caches = len(caches._c)
        later_caches = BranchCaches() if fresh_cache_for_later else caches
        later = guided_step(m, _later(inp["media"]), inp["ids"], inp["uncond_ids"], 3.5, caches=later_caches)
    return plain, first, later, n_caches + len(later_caches._c) * (later_caches is not caches)


def _run_tp8(path):
    from phyx.parallel import ParallelConfig, get_parallel_state, init_parallel, reset_parallel_state
    init_parallel(ParallelConfig(cfg=1, sp=1, tp=TP))
    try:
        m = c3.load(path)
        attn = m.layers[0].self_attn
        local_kv = attn.add_k_proj.weight.shape[0] // m.config.head_dim   # KV heads this rank holds
        return _run(path), local_kv, get_parallel_state().tp_size
    finally:
        reset_parallel_state()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return c3.make_tiny_checkpoint(tmp_path_factory.mktemp("c3tp8") / "c3", seed=7)


@pytest.fixture(scope="module")
def results(ckpt):
    with RankPool(TP, env={"PHYX_BACKEND": "cpu"}, dist_timeout_s=60) as pool:
        return pool.run(_run_tp8, str(ckpt))


def test_tiny_config_has_the_nano_head_split():
    cfg = c3.tiny_config()
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (16, 8)
    assert cfg.num_key_value_heads % TP == 0


def test_tp8_equals_single_device(results, ckpt):
    ref_plain, ref_first, _, _ = _run(ckpt)
    assert len(results) == TP
    for rank, ((plain, first, _, _), local_kv, tp) in enumerate(results):
        assert tp == TP and local_kv == 1, f"rank {rank}: tp {tp}, {local_kv} local KV heads"
        for key in ("vision", "sound", "action"):
            err = rel_l2(plain[key], ref_plain[key])
            assert err < TOL, f"rank {rank} plain {key}: rel L2 {err:.2e}"
            err = rel_l2(first[key], ref_first[key])
            assert err < TOL, f"rank {rank} guided {key}: rel L2 {err:.2e}"
        assert torch.count_nonzero(plain["vision"][:, :, 0]) == 0   # conditioning frame


def test_tp8_cached_text_kv_at_a_later_step_equals_single_device(results, ckpt):
    _, _, ref_later, n_ref = _run(ckpt, fresh_cache_for_later=True)
    assert n_ref == 4                       # the reference rebuilt both branches' caches
    for rank, ((_, first, later, n_caches), _, _) in enumerate(results):
        assert n_caches == 2, f"rank {rank}: expected one cache per branch (cond, uncond), got {n_caches}"
        for key in ("vision", "sound", "action"):
            err = rel_l2(later[key], ref_later[key])
            assert err < TOL, f"rank {rank} cached later step {key}: rel L2 {err:.2e}"
            assert rel_l2(later[key], first[key]) > 1e-3, "the later timestep must change the output"
