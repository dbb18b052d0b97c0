"""Parallel VAE decode (exact and tiles) against the single-device decode, on 2 gloo ranks,
with odd latent sizes that split unevenly; one rank pool for the whole module."""
from __future__ import annotations

import pytest
import torch

from phyx.pipelines import vae as vae_mod
from phyx.pipelines import vae_parallel
from phyx.testing.multiproc import RankPool

CASES = [  # (vae kind, latent [T, H, W]): odd sizes, H-split and W-split, both VAE generations
    ("wan2.1", (2, 5, 3)),
    ("wan2.1", (1, 3, 7)),
    ("wan2.2", (2, 3, 5)),
]


def _latent(kind, thw, seed=1):
    z_dim = vae_mod.TINY_VAE[kind]["z_dim"]
    return torch.randn(1, z_dim, *thw, generator=torch.Generator().manual_seed(seed))


def _decode_all(cases):
    out = []
    for kind, thw in cases:
        vae = vae_mod.build_tiny_vae(kind, seed=0)
        z = _latent(kind, thw)
        exact, info_e = vae_parallel.decode(vae, z, mode="exact")
        tiles, info_t = vae_parallel.decode(vae, z, mode="tiles", halo=1)
        out.append({"exact": exact, "tiles": tiles, "info_exact": info_e, "info_tiles": info_t})
    return out


@pytest.fixture(scope="module")
def results():
    with RankPool(2, env={"PHYX_BACKEND": "cpu"}) as pool:
        return pool.run(_decode_all, CASES)


def _psnr(a, b):
    mse = (a.double() - b.double()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(4.0 / mse)).item()  # range [-1, 1]


@pytest.mark.parametrize("i", range(len(CASES)))
def test_exact_equals_single_device(results, i):
    kind, thw = CASES[i]
    ref = vae_parallel.decode_single(vae_mod.build_tiny_vae(kind, seed=0), _latent(kind, thw))
    for r, per_rank in enumerate(results):
        res = per_rank[i]
        assert res["info_exact"]["mode"] == "exact" and res["info_exact"]["ranks"] == 2
        assert sum(res["info_exact"]["strips"]) == max(thw[1], thw[2])
        assert res["exact"].shape == ref.shape
        torch.testing.assert_close(res["exact"], ref, atol=2e-5, rtol=1e-4, msg=f"{kind} rank {r}")


@pytest.mark.parametrize("i", range(len(CASES)))
def test_tiles_close_to_single_device(results, i):
    kind, thw = CASES[i]
    ref = vae_parallel.decode_single(vae_mod.build_tiny_vae(kind, seed=0), _latent(kind, thw))
    t0, t1 = results[0][i]["tiles"], results[1][i]["tiles"]
    assert t0.shape == ref.shape
    torch.testing.assert_close(t0, t1)  # every rank holds the same blended video
    psnr = _psnr(t0, ref)
    print(f"tiles PSNR vs single-device ({kind}, latent {thw}, halo 1): {psnr:.1f} dB")
    assert psnr > 20  # an approximation, but a close one; a misplaced tile drops far below
    assert not torch.equal(t0, ref) or psnr == float("inf")


def test_feather_weights_partition_of_unity():
    # two tiles overlapping by 6 px: their ramps sum to one over the overlap
    a = vae_parallel._feather_weights(0, 10, 0, 6)
    b = vae_parallel._feather_weights(4, 14, 6, 0)
    total = torch.zeros(14, dtype=torch.float64)
    total[0:10] += a
    total[4:14] += b
    torch.testing.assert_close(total, torch.ones(14, dtype=torch.float64))


def test_split_sizes_uneven():
    assert vae_parallel.split_sizes(5, 2) == [3, 2]
    assert vae_parallel.split_sizes(7, 3) == [3, 2, 2]
    assert sum(vae_parallel.split_sizes(11, 4)) == 11


def test_single_process_is_single_decode():
    vae = vae_mod.build_tiny_vae("wan2.1", seed=0)
    z = _latent("wan2.1", (1, 2, 2))
    out, info = vae_parallel.decode(vae, z, mode="exact")
    assert info["mode"] == "single"
    torch.testing.assert_close(out, vae_parallel.decode_single(vae, z))
