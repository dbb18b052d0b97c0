"""Small helpers the test suites share: one relative-L2, one CLI runner, one free port."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import torch


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, in float64 (b is the reference)."""
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict:
    """The environment without phyx / Ascend switches, so a child process chooses afresh."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHYX_", "HCCL_", "ASCEND_"))}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def run_cli(args, *, backend: str | None = None, cwd=None, timeout: float = 300,
            **env: str) -> subprocess.CompletedProcess:
    """`python -m phyx.cli ARGS` in a fresh process (its own backend choice and environment)."""
    e = clean_env(**env)
    if backend:
        e["PHYX_BACKEND"] = backend
    return subprocess.run([sys.executable, "-m", "phyx.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=e, timeout=timeout)
