"""Multi-rank HCCL measurements for the certificate (2 NPUs): the device memory HCCL's
communicators take, and which error a stalled collective raises first. The rank functions are
module-level so phyx.testing.multiproc.RankPool can send them to its ranks."""
from __future__ import annotations

import time

MB = 2 ** 20


def _free_bytes() -> int:
    import torch

    torch.npu.synchronize()
    free, _ = torch.npu.mem_get_info()
    return int(free) + int(torch.npu.memory_reserved())   # HCCL memory is outside torch's allocator


def _rank_buffers() -> dict:
    import torch

    from phyx import comm

    dev = torch.device("npu", comm.local_rank())
    x = torch.ones(16, device=dev)
    f0 = _free_bytes()
    comm.all_reduce(x)                       # the world communicator is created here
    f1 = _free_bytes()
    g = comm.new_group([0, 1])
    comm.all_reduce(x, group=g)              # one more group (what an SP or TP axis costs)
    f2 = _free_bytes()
    comm.ring_exchange(x, group=g)           # ring attention's point-to-point communicator(s)
    f3 = _free_bytes()
    return {"world_mb": (f0 - f1) / MB, "group_mb": (f0 - f2) / MB, "p2p_mb": (f2 - f3) / MB}


def measure_buffers() -> dict:
    """MB of device memory per rank taken by the world + one group communicator, and by the ring's
    point-to-point ones (rank 0's view)."""
    from phyx.testing.multiproc import RankPool

    pool = RankPool(2, env={"PHYX_BACKEND": "npu"}, dist_timeout_s=300.0, timeout_s=600.0)
    try:
        return pool.run(_rank_buffers)[0]
    finally:
        pool.close()


def _rank_stall(pg_timeout_s: float) -> dict:
    import torch

    from phyx import comm

    x = torch.ones(4, device=torch.device("npu", comm.local_rank()))
    comm.all_reduce(x)                       # communicators up
    if comm.rank() == 1:
        time.sleep(pg_timeout_s + 60)        # never joins the next collective in time
        return {"rank": 1}
    t0 = time.monotonic()
    try:
        comm.all_reduce(x)
        torch.npu.synchronize()
        return {"rank": 0, "error": None, "seconds": time.monotonic() - t0}
    except Exception as e:  # noqa: BLE001 - the error text is the measurement
        return {"rank": 0, "error": f"{type(e).__name__}: {str(e)[:300]}", "seconds": time.monotonic() - t0}


def timeout_race(pg_timeout_s: float = 200.0) -> dict:
    """Rank 1 stalls; rank 0 waits in an all_reduce. HCCL's error (HCCL_EXEC_TIMEOUT derived from
    the process-group timeout) must arrive before the process-group watchdog's."""
    from phyx.testing.multiproc import RankPool

    pool = RankPool(2, env={"PHYX_BACKEND": "npu"}, dist_timeout_s=pg_timeout_s,
                    timeout_s=pg_timeout_s + 120)
    try:
        outs = pool.run_outcomes(_rank_stall, pg_timeout_s)
    finally:
        pool.close()
    r0 = next((o.value for o in outs if getattr(o, "value", None) and o.value.get("rank") == 0), None)
    if not r0:
        return {"hccl_first": False, "outcomes": [str(o)[:300] for o in outs], "pg_timeout_s": pg_timeout_s}
    err = r0.get("error") or ""
    return {"hccl_first": bool(err) and "hccl" in err.lower() and r0["seconds"] < pg_timeout_s,
            "seconds": r0["seconds"], "error": err, "pg_timeout_s": pg_timeout_s}
