"""HCCL's bounded-failure switches, derived from phyx.comm's process-group timeout.

Ascend asks for a process-group timeout LONGER than both HCCL timeouts, so HCCL's own error (with
its reason) comes before the watchdog's. phyx.comm's process-group timeout is PHYX_DIST_TIMEOUT_S
(default 300 s), so the pair is coupled here:

- HCCL_EXEC_TIMEOUT = the largest multiple of 68 s at most PHYX_DIST_TIMEOUT_S - 20 (272 s for the
  default). A2/A3 take whole seconds; the first-generation Atlas training / inference series round
  down to a multiple of 68 s (at most 17340 s), so a multiple of 68 is exact everywhere.
- HCCL_CONNECT_TIMEOUT = HCCL_EXEC_TIMEOUT - 20, kept in the documented range 120..7200; HCCL
  really waits the value + 20 s. The first collective creates the communicators, so this is the
  wait that trips while rank 0 alone loads a checkpoint or decodes the VAE: raise
  PHYX_DIST_TIMEOUT_S for such runs and both follow.
- TORCH_HCCL_ASYNC_ERROR_HANDLING=1: torch_npu 2.14 reads this name (the unprefixed one is
  deprecated); a failed collective aborts the communicator instead of hanging.

A value the user set is kept, but checked: one that breaks the ordering is a phyx error naming the
fix, never a silent watchdog kill without HCCL's reason.
"""
from __future__ import annotations

import os

from phyx.errors import ParallelConfigError

EXEC_STEP_S = 68            # first-generation chips round HCCL_EXEC_TIMEOUT down to this
EXEC_MAX_S = 17340          # first-generation maximum (A2/A3 allow more; phyx stays portable)
CONNECT_MIN_S, CONNECT_MAX_S = 120, 7200
CONNECT_EXTRA_S = 20        # HCCL waits HCCL_CONNECT_TIMEOUT + 20 s
MARGIN_S = 20               # HCCL's error must arrive this much before the watchdog's
MIN_PG_TIMEOUT_S = CONNECT_MIN_S + CONNECT_EXTRA_S + MARGIN_S     # 160 s
ASYNC_ERROR = {"TORCH_HCCL_ASYNC_ERROR_HANDLING": "1"}
_FIX = "PHYX_DIST_TIMEOUT_S"


def hccl_timeouts(pg_timeout_s: float) -> dict:
    """HCCL_EXEC_TIMEOUT / HCCL_CONNECT_TIMEOUT (strings, seconds) for a process-group timeout."""
    t = float(pg_timeout_s)
    if t < MIN_PG_TIMEOUT_S:
        raise ParallelConfigError(
            f"{_FIX}={t:g} s is too short for HCCL: its connect timeout cannot go below "
            f"{CONNECT_MIN_S} s (+{CONNECT_EXTRA_S} s), and Ascend asks the process-group timeout to "
            f"exceed it; set {_FIX} to at least {MIN_PG_TIMEOUT_S}")
    exec_s = min(EXEC_MAX_S, int((t - MARGIN_S) // EXEC_STEP_S) * EXEC_STEP_S)
    connect_s = max(CONNECT_MIN_S, min(CONNECT_MAX_S, exec_s - CONNECT_EXTRA_S))
    return {"HCCL_EXEC_TIMEOUT": str(exec_s), "HCCL_CONNECT_TIMEOUT": str(connect_s)}


def _int_env(env, name: str):
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ParallelConfigError(f"{name}={raw!r} is not a whole number of seconds: unset it (phyx "
                                  f"derives it from {_FIX}) or set an integer") from None


def check_hccl_timeouts(pg_timeout_s: float, environ=None) -> None:
    """Both HCCL timeouts (user-set or derived) below the process-group timeout, or a phyx error."""
    env = os.environ if environ is None else environ
    t = float(pg_timeout_s)
    exec_s, connect_s = _int_env(env, "HCCL_EXEC_TIMEOUT"), _int_env(env, "HCCL_CONNECT_TIMEOUT")
    if exec_s is not None and (exec_s <= 0 or exec_s >= t):
        what = "0 means HCCL never times out" if exec_s <= 0 else f"it is not below {_FIX}={t:g}"
        raise ParallelConfigError(
            f"HCCL_EXEC_TIMEOUT={exec_s}: {what}, so the process-group watchdog would kill the job "
            f"without HCCL's reason; unset HCCL_EXEC_TIMEOUT (phyx derives "
            f"{hccl_timeouts(max(t, MIN_PG_TIMEOUT_S))['HCCL_EXEC_TIMEOUT']} s) or raise {_FIX} above it")
    if connect_s is not None:
        if not CONNECT_MIN_S <= connect_s <= CONNECT_MAX_S:
            raise ParallelConfigError(f"HCCL_CONNECT_TIMEOUT={connect_s} is outside HCCL's range "
                                      f"{CONNECT_MIN_S}..{CONNECT_MAX_S}; unset it or pick a value in range")
        if connect_s + CONNECT_EXTRA_S >= t:
            raise ParallelConfigError(
                f"HCCL_CONNECT_TIMEOUT={connect_s} (HCCL waits {connect_s + CONNECT_EXTRA_S} s) is not "
                f"below {_FIX}={t:g}; unset HCCL_CONNECT_TIMEOUT or raise {_FIX} above "
                f"{connect_s + CONNECT_EXTRA_S}")


def hccl_env_defaults(pg_timeout_s: float, environ=None) -> dict:
    """The HCCL switches for a process-group timeout, after checking what the user set."""
    from phyx.parallel.plan import HCCL_BUFFSIZE_DEFAULT_MB, P2P_HCCL_BUFFSIZE_DEFAULT_MB, env_buffsize_mb

    env = os.environ if environ is None else environ
    out = hccl_timeouts(pg_timeout_s)
    check_hccl_timeouts(pg_timeout_s, env)
    env_buffsize_mb("HCCL_BUFFSIZE", HCCL_BUFFSIZE_DEFAULT_MB, 1, env)        # validate only
    env_buffsize_mb("P2P_HCCL_BUFFSIZE", P2P_HCCL_BUFFSIZE_DEFAULT_MB, 0, env)
    out.update(ASYNC_ERROR)
    return out
