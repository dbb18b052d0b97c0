"""A pool of gloo ranks for multi-process tests: spawn N ranks once, run many functions in them.

    pool = RankPool(4, env={"PHYX_BACKEND": "cpu"})
    results = pool.run(my_module_level_fn, arg1, arg2)   # list, one result per rank
    pool.close()

Each rank is a spawned process that selects the phyx backend from `env`, calls
phyx.comm.init_distributed (gloo; the process group lives as long as the pool), then answers
requests: a module-level function (pickled by reference, so it must be importable from the test
module) with its arguments; tensors in the result come back on the CPU.

Failure is bounded and loud, never a hang:
- a rank that raises: the others get a grace period to finish (they may be stuck in a
  collective the failed rank never joined); RankError reports every rank's traceback. If a rank
  stays silent the pool is torn down and the next run() starts a fresh one;
- a rank that dies: RankDiedError names it and its exit code;
- no answer within `timeout_s`: RankTimeoutError names the silent ranks.
run_outcomes() returns what each rank did instead of raising (to test failure handling itself).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import socket
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Callable

_GRACE_S = 5.0


class RankError(RuntimeError):
    pass


class RankDiedError(RankError):
    pass


class RankTimeoutError(RankError):
    pass


@dataclass
class Outcome:
    rank: int
    ok: bool = False
    value: Any = None
    error: str | None = None       # "Type: message" of what the rank raised
    traceback: str | None = None
    died: bool = False
    exitcode: int | None = None
    timed_out: bool = False
    seconds: float = 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _to_cpu(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    return obj


def _worker(rank: int, world_size: int, port: int, env: dict, dist_timeout_s: float, conn) -> None:
    os.environ.update({k: str(v) for k, v in env.items()})
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    try:
        import torch

        torch.set_num_threads(int(env.get("OMP_NUM_THREADS", 1)))
        import phyx.comm

        phyx.comm.init_distributed(timeout_s=dist_timeout_s)
        conn.send(("ready", None))
    except BaseException as e:  # report start-up failure instead of dying silently
        conn.send(("err", (f"{type(e).__name__}: {e}", traceback.format_exc())))
        return
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            break
        fn, args, kwargs = msg
        try:
            conn.send(("ok", _to_cpu(fn(*args, **kwargs))))
        except BaseException as e:
            conn.send(("err", (f"{type(e).__name__}: {e}", traceback.format_exc())))
    try:
        phyx.comm.destroy()
    except Exception:
        pass


class RankPool:
    def __init__(self, world_size: int, env: dict | None = None, timeout_s: float = 120.0,
                 dist_timeout_s: float = 30.0, start_timeout_s: float = 120.0):
        """env: extra environment for the ranks (e.g. PHYX_BACKEND); OMP_NUM_THREADS defaults to 1
        so N ranks share a small CI box. dist_timeout_s bounds every collective in the ranks."""
        self.world_size = world_size
        self.env = {"OMP_NUM_THREADS": "1", **(env or {})}
        self.timeout_s = timeout_s
        self.dist_timeout_s = dist_timeout_s
        self.start_timeout_s = start_timeout_s
        self._procs: list = []
        self._conns: list = []

    # --- life cycle --------------------------------------------------------------------------
    def start(self) -> "RankPool":
        if self._procs:
            return self
        ctx = mp.get_context("spawn")
        port = _free_port()
        for r in range(self.world_size):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, name=f"phyx-rank{r}",
                            args=(r, self.world_size, port, self.env, self.dist_timeout_s, child),
                            daemon=True)
            p.start()
            child.close()
            self._procs.append(p)
            self._conns.append(parent)
        outs = self._collect(self.start_timeout_s)
        bad = [o for o in outs if not o.ok]
        if bad:
            self.close()
            raise RankError("rank pool failed to start:\n" + _describe(bad))
        return self

    def close(self) -> None:
        for c in self._conns:
            try:
                c.send(None)
            except Exception:
                pass
        deadline = time.monotonic() + 5
        for p in self._procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self._procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        for c in self._conns:
            c.close()
        self._procs, self._conns = [], []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False

    # --- running ----------------------------------------------------------------------------
    def run_outcomes(self, fn: Callable, *args, timeout_s: float | None = None, **kwargs) -> list[Outcome]:
        """Run fn(*args, **kwargs) on every rank; one Outcome per rank, never raises for rank
        failures. If every rank answered (even with an exception) the pool stays up; if one died
        or timed out it is torn down and the next call starts a fresh one."""
        self.start()
        for c in self._conns:
            c.send((fn, args, kwargs))
        outs = self._collect(self.timeout_s if timeout_s is None else timeout_s)
        if any(o.died or o.timed_out for o in outs):
            self.close()  # a rank is gone or stuck in a collective: start afresh next time
        return outs

    def run(self, fn: Callable, *args, timeout_s: float | None = None, **kwargs) -> list:
        """Run fn on every rank and return the per-rank results; raise RankError (with every
        rank's traceback) if any rank raised, died or timed out."""
        outs = self.run_outcomes(fn, *args, timeout_s=timeout_s, **kwargs)
        bad = [o for o in outs if not o.ok]
        if bad:
            cls = (RankDiedError if any(o.died for o in bad) else
                   RankTimeoutError if all(o.timed_out for o in bad) else RankError)
            raise cls(f"{getattr(fn, '__name__', fn)} failed on {len(bad)} of {self.world_size} "
                      f"ranks:\n" + _describe(bad))
        return [o.value for o in outs]

    def _collect(self, timeout_s: float) -> list[Outcome]:
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        outs: dict[int, Outcome] = {}
        by_conn = {c: r for r, c in enumerate(self._conns)}
        by_sentinel = {p.sentinel: r for r, p in enumerate(self._procs)}

        def died(r: int) -> None:
            p = self._procs[r]
            p.join(2)
            outs[r] = Outcome(r, died=True, exitcode=p.exitcode, seconds=time.monotonic() - t0,
                              error=f"rank {r} died (exit code {p.exitcode})")

        def receive(r: int) -> None:
            try:
                kind, payload = self._conns[r].recv()
            except (EOFError, OSError):  # pipe closed: the process is gone
                died(r)
                return
            o = Outcome(r, seconds=time.monotonic() - t0)
            if kind == "err":
                o.error, o.traceback = payload
            else:
                o.ok, o.value = True, payload
            outs[r] = o

        while len(outs) < self.world_size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            waiting = [c for c, r in by_conn.items() if r not in outs]
            waiting += [s for s, r in by_sentinel.items() if r not in outs]
            for obj in wait(waiting, timeout=left):
                r = by_conn.get(obj, by_sentinel.get(obj))
                if r in outs:
                    continue
                if obj in by_conn or self._conns[r].poll():
                    receive(r)  # an answer (or EOF) is waiting on the pipe
                else:
                    died(r)
            # After the first failure the others get a grace period, not the full timeout (and
            # when a rank died, enough time for their collectives to time out and report).
            if any(not o.ok for o in outs.values()):
                grace = _GRACE_S + (self.dist_timeout_s if any(o.died for o in outs.values()) else 0)
                deadline = min(deadline, time.monotonic() + grace)
        for r in range(self.world_size):
            if r not in outs:
                outs[r] = Outcome(r, timed_out=True, seconds=time.monotonic() - t0,
                                  error=f"rank {r} gave no answer within {timeout_s:.0f} s "
                                        f"(or the grace period after another rank failed)")
        return [outs[r] for r in range(self.world_size)]


def _describe(bad: list[Outcome]) -> str:
    lines = []
    for o in bad:
        lines.append(f"--- rank {o.rank}: {o.error}")
        if o.traceback:
            lines.append(o.traceback.rstrip())
    return "\n".join(lines)


def rank_backend_params(names=("cpu", "npu-emulated")):
    """pytest params for backends the ranks can run, the unavailable ones skipped with the reason
    (npu-emulated is skipped until its plug-in imports)."""
    import pytest

    from phyx.backend import backend_class

    params = []
    for name in names:
        try:
            ok, why = backend_class(name).probe()
        except Exception as e:  # plug-in not importable (yet)
            ok, why = False, f"plug-in failed to load: {type(e).__name__}: {e}"
        marks = () if ok else (pytest.mark.skip(reason=f"backend {name!r} unavailable: {why}"),)
        params.append(pytest.param(name, id=name, marks=marks))
    return params
