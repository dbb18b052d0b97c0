"""`phyx generate` under 2 gloo ranks (torchrun-style env) with cfg / sp / tp on the CPU: every
layout gives the single-device video (one rank pool for the whole module)."""
from __future__ import annotations

import pytest
import torch

from phyx.testing.multiproc import RankPool

SMALL = dict(height=32, width=32, frames=5, steps=2, progress=False, write=False)
LAYOUTS = [  # (model, task, parallel layout)
    ("tiny-wan", "t2v", dict(cfg=2)),
    ("tiny-wan", "t2v", dict(sp=2)),
    ("tiny-wan", "t2v", dict(tp=2)),
    ("tiny-wan-ti2v", "i2v", dict(sp=2)),
    ("tiny-lingbot", "i2v", dict(cfg=2)),
    ("tiny-cosmos-predict2-v2w", "v2w", dict(cfg=2)),
    ("tiny-cosmos3", "t2av", dict(cfg=2)),
    ("tiny-cosmos3", "i2v", dict(sp=2)),
]


def _generate_all(layouts, vae_parallel):
    from phyx.cli.generate import _quiet_libraries
    from phyx.pipelines import GenerateArgs, generate

    _quiet_libraries()
    out = []
    for model, task, lay in layouts:
        r = generate(GenerateArgs(model=model, task=task, vae_parallel=vae_parallel, **SMALL, **lay))
        out.append({"latents": r["latents"], "video": r["video"], "decode": r["record"]["vae_decode"]})
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("phyx_cache"))


@pytest.fixture(scope="module")
def parallel_results(cache):
    with RankPool(2, env={"PHYX_BACKEND": "cpu", "PHYX_CACHE_DIR": cache}, timeout_s=300) as pool:
        return pool.run(_generate_all, LAYOUTS, "exact")


@pytest.fixture(scope="module")
def single_results(cache):
    mp = pytest.MonkeyPatch()
    mp.setenv("PHYX_CACHE_DIR", cache)
    mp.delenv("WORLD_SIZE", raising=False)
    try:
        return _generate_all([(m, t, {}) for m, t, _ in LAYOUTS], "exact")
    finally:
        mp.undo()


@pytest.mark.parametrize("i", range(len(LAYOUTS)), ids=[f"{m}-{t}-{l}" for m, t, l in LAYOUTS])
def test_layout_matches_single_device(parallel_results, single_results, i):
    ref = single_results[i]
    for rank in (0, 1):
        got = parallel_results[rank][i]
        rel = ((got["latents"] - ref["latents"]).norm() / ref["latents"].norm()).item()
        assert rel < 1e-4, f"rank {rank}: latent relative L2 {rel:.2e}"
        assert got["decode"]["mode"] == "exact" and got["decode"]["ranks"] == 2
        torch.testing.assert_close(got["video"], ref["video"], atol=1e-3, rtol=0)
    # both ranks hold the same video (rank 0 writes it)
    torch.testing.assert_close(parallel_results[0][i]["video"], parallel_results[1][i]["video"], atol=0, rtol=0)
