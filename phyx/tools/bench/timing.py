"""Timing on any phyx backend: device events around each call (host clock on the CPU), warm-up
per shape before timing (first calls compile, pick algorithms, allocate), the median of repeats.
Several input sets can be rotated so a small op does not measure the cache."""
from __future__ import annotations

import statistics
import time

import torch


def _dev():
    import phyx

    return phyx.get_backend().device


def time_call(fn, *, warmup: int = 3, iters: int = 10, min_ms: float = 0.0) -> dict:
    """Median / min / max milliseconds of fn() on the active device. `fn` takes no arguments
    (close over rotated inputs yourself). warm-up runs first and is never timed."""
    dev = _dev()
    for _ in range(warmup):
        fn()
    dev.synchronize()
    times = []
    total = 0.0
    n = 0
    while n < iters or total < min_ms:
        start, end = dev.Event(enable_timing=True), dev.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        t = start.elapsed_time(end)
        times.append(t)
        total += t
        n += 1
        if n >= 10 * max(iters, 1):
            break
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "iters": len(times)}


def host_call_us(fn, *, number: int = 2000, repeat: int = 7) -> float:
    """Best-of-repeats host microseconds per call (CPU dispatch overhead)."""
    for _ in range(min(number, 200)):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best * 1e6


def peak_memory(fn) -> int | None:
    """Peak device bytes allocated during fn() above what was allocated before (None on CPU)."""
    dev = _dev()
    if dev.device_type == "cpu":
        return None
    dev.synchronize()
    base = dev.memory_allocated()
    dev.reset_peak_memory_stats()
    fn()
    dev.synchronize()
    return int(dev.max_memory_allocated() - base)


def randn(shape, dtype, device, seed=0, host=False):
    """Random data, never zeros (zeros can run faster than real data and hide unwritten
    outputs). host=True draws on the CPU so every vendor sees the same numbers (parity checks);
    otherwise on the device (fast for the large timing inputs)."""
    if host:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(shape, generator=g, dtype=torch.float32).to(device=device, dtype=dtype)
    torch.manual_seed(seed)
    return torch.randn(shape, dtype=dtype, device=device)
