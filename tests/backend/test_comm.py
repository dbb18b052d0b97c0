"""phyx.comm collectives on real multi-process gloo groups (cpu and npu-emulated backends)."""
from __future__ import annotations

import os
import time

import pytest
import torch

from phyx.testing.multiproc import RankError, RankPool, rank_backend_params

WORLD = 2


@pytest.fixture(scope="module", params=rank_backend_params())
def pool(request):
    with RankPool(WORLD, env={"PHYX_BACKEND": request.param}, dist_timeout_s=20) as p:
        yield p


def _collectives():
    from phyx import comm

    r, n = comm.rank(), comm.world_size()
    out = {"rank": r, "world": n}
    x = torch.arange(6, dtype=torch.float32).view(2, 3) + 10 * r
    out["sum"] = comm.all_reduce(x.clone())
    out["avg"] = comm.all_reduce(x.clone(), op="avg")
    out["max"] = comm.all_reduce(x.clone(), op="max")
    kept = x.clone()
    comm.all_reduce(kept)
    out["caller_tensor_kept"] = torch.equal(kept, x)  # no in-place reduce unless asked
    owned = x.clone()
    out["inplace_is_same"] = comm.all_reduce(owned, inplace=True) is owned
    out["gather0"] = comm.all_gather(x, dim=0)
    out["gather1"] = comm.all_gather(x, dim=1)
    out["bcast"] = comm.broadcast(x.clone(), src=1)
    comm.barrier()
    out["ring"] = comm.ring_exchange(torch.tensor([float(r)]))
    # Ulysses exchange: [B, S/P, N, D] -> [B, S, N/P, D] and back.
    B, S, N, D = 2, 6, 4, 3
    full = torch.arange(B * S * N * D, dtype=torch.float32).view(B, S, N, D)
    local = full.chunk(n, dim=1)[r]
    heads = comm.all_to_all_4d(local, scatter_dim=2, gather_dim=1)
    out["a2a_ok"] = torch.equal(heads, full.chunk(n, dim=2)[r])
    out["a2a_back_ok"] = torch.equal(comm.all_to_all_4d(heads, scatter_dim=1, gather_dim=2), local)
    out["backend"] = __import__("phyx").get_backend().name
    return out


def test_collectives(pool):
    res = pool.run(_collectives)
    x0 = torch.arange(6, dtype=torch.float32).view(2, 3)
    x1 = x0 + 10
    for r, o in enumerate(res):
        assert o["rank"] == r and o["world"] == WORLD
        torch.testing.assert_close(o["sum"], x0 + x1)
        torch.testing.assert_close(o["avg"], (x0 + x1) / 2)
        torch.testing.assert_close(o["max"], x1)
        torch.testing.assert_close(o["gather0"], torch.cat([x0, x1], 0))
        torch.testing.assert_close(o["gather1"], torch.cat([x0, x1], 1))
        torch.testing.assert_close(o["bcast"], x1)
        assert o["ring"].item() == float((r - 1) % WORLD)
        assert o["a2a_ok"] and o["a2a_back_ok"]
        assert o["caller_tensor_kept"] and o["inplace_is_same"]
        assert o["backend"] == pool.env["PHYX_BACKEND"]  # the ranks really run that backend


def _bad_all_to_all():
    from phyx import comm

    comm.all_to_all_4d(torch.zeros(1, 3, 3, 2), scatter_dim=2, gather_dim=1)


def test_all_to_all_indivisible_is_clear(pool):
    with pytest.raises(RankError, match="does not split across 2 ranks"):
        pool.run(_bad_all_to_all)


def _avg_never_uses_reduceop_avg():
    import torch.distributed as dist

    from phyx import comm

    real = dist.ReduceOp.AVG
    try:
        del_ok = True
        dist.ReduceOp.AVG = None  # any use would now fail
    except Exception:
        del_ok = False
    try:
        return comm.all_reduce(torch.ones(2) * (comm.rank() + 1), op="avg"), del_ok
    finally:
        if del_ok:
            dist.ReduceOp.AVG = real


def test_avg_is_sum_then_divide(pool):
    for out, _ in pool.run(_avg_never_uses_reduceop_avg):
        torch.testing.assert_close(out, torch.full((2,), 1.5))


def _die_or_reduce():
    from phyx import comm

    if comm.rank() == 1:
        os._exit(3)  # a crashed rank: no cleanup, no goodbye
    t0 = time.monotonic()
    try:
        comm.all_reduce(torch.ones(4))
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}", "seconds": time.monotonic() - t0}
    return {"error": None, "seconds": time.monotonic() - t0}


def test_killed_rank_fails_the_others_fast_and_clearly():
    # Own pool: killing a rank breaks the group. dist timeout 10 s bounds the survivor.
    with RankPool(2, env={"PHYX_BACKEND": "cpu"}, dist_timeout_s=10) as p:
        t0 = time.monotonic()
        outs = p.run_outcomes(_die_or_reduce, timeout_s=60)
        elapsed = time.monotonic() - t0
    assert outs[1].died and outs[1].exitcode == 3
    survivor = outs[0]
    assert survivor.ok, survivor.error
    err = survivor.value["error"]
    assert err is not None and "CommError" in err and "all_reduce" in err and "ranks [0, 1]" in err
    assert survivor.value["seconds"] < 15 and elapsed < 30


def test_init_without_env_is_clear(monkeypatch):
    from phyx import comm

    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(k, raising=False)
    if comm.is_initialized():
        pytest.skip("a process group is already running in this process")
    with pytest.raises(comm.CommError, match="torchrun"):
        comm.init_distributed()


def test_single_process_collectives_are_identity():
    from phyx import comm

    if comm.is_initialized():
        pytest.skip("a process group is already running in this process")
    x = torch.randn(2, 3, 4, 5)
    assert comm.all_reduce(x) is x and comm.all_gather(x) is x
    assert comm.all_to_all_4d(x, 2, 1) is x and comm.world_size() == 1 and comm.rank() == 0
