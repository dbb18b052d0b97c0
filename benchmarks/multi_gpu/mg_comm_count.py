"""Count the collectives a step issues through phyx.comm (calls and bytes sent per rank).

The counts are evidence that a layout really ran in parallel (TP all-reduces, Ulysses
all-to-alls, one CFG all-gather) and give the communication volume per step. Model and parallel
code call the collectives as `comm.<name>(...)`, so wrapping the module attributes sees them all;
the wrappers cost a Python call each, nothing on the device.
"""
from __future__ import annotations

import contextlib
import inspect

from phyx import comm

COLLECTIVES = ("all_reduce", "all_gather", "all_to_all_4d", "broadcast", "ring_exchange", "ring_exchange_start")


@contextlib.contextmanager
def count_collectives():
    """Yields a dict name -> {'calls', 'bytes'} filled while the block runs (single-rank groups
    are identities in phyx.comm and are not counted)."""
    counts = {n: {"calls": 0, "bytes": 0} for n in COLLECTIVES}
    originals = {n: getattr(comm, n) for n in COLLECTIVES}

    def wrap(name, fn):
        sig = inspect.signature(fn)

        def counted(*a, **k):
            bound = sig.bind(*a, **k).arguments
            t, group = next(iter(bound.values())), bound.get("group")
            if comm.world_size(group) > 1:
                counts[name]["calls"] += 1
                counts[name]["bytes"] += t.numel() * t.element_size()
            return fn(*a, **k)
        return counted

    for n, fn in originals.items():
        setattr(comm, n, wrap(n, fn))
    try:
        yield counts
    finally:
        for n, fn in originals.items():
            setattr(comm, n, fn)


def per_step(counts: dict, steps: int) -> dict:
    return {n: {"calls": c["calls"] / steps, "bytes": c["bytes"] / steps}
            for n, c in counts.items() if c["calls"]}
