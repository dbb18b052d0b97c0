"""HCCL switches: timeouts coupled to PHYX_DIST_TIMEOUT_S, buffer estimate with ring attention's
point-to-point communicators, and clear errors for bad values."""
from __future__ import annotations

import pytest

from phyx.comm import DEFAULT_TIMEOUT_S, CommError, _dist_env_defaults, dist_timeout_s
from phyx.errors import ParallelConfigError
from phyx.parallel import ParallelConfig
from phyx.parallel.plan import PRESETS, comm_volume, hccl_buffer_cost, plan
from phyx_npu import NpuBackend
from phyx_npu.hccl_env import CONNECT_EXTRA_S, MIN_PG_TIMEOUT_S, check_hccl_timeouts, hccl_env_defaults, hccl_timeouts


@pytest.mark.parametrize("t", [MIN_PG_TIMEOUT_S, 300, 301, 600, 1800, 7300, 40000])
def test_timeouts_stay_below_the_process_group_timeout(t):
    env = hccl_timeouts(t)
    exec_s, connect_s = int(env["HCCL_EXEC_TIMEOUT"]), int(env["HCCL_CONNECT_TIMEOUT"])
    assert exec_s % 68 == 0 and 68 <= exec_s < t and exec_s <= 17340
    assert 120 <= connect_s <= 7200 and connect_s + CONNECT_EXTRA_S < t
    check_hccl_timeouts(t, env)   # derived values pass their own check


def test_timeouts_follow_a_longer_process_group_timeout():
    assert hccl_timeouts(DEFAULT_TIMEOUT_S) == {"HCCL_EXEC_TIMEOUT": "272", "HCCL_CONNECT_TIMEOUT": "252"}
    long = hccl_timeouts(1800)
    assert int(long["HCCL_EXEC_TIMEOUT"]) > 1700 and int(long["HCCL_CONNECT_TIMEOUT"]) > 1600


def test_too_short_process_group_timeout_is_a_clear_error():
    with pytest.raises(ParallelConfigError, match=f"at least {MIN_PG_TIMEOUT_S}"):
        hccl_timeouts(100)


@pytest.mark.parametrize("env,match", [
    ({"HCCL_EXEC_TIMEOUT": "612"}, "raise PHYX_DIST_TIMEOUT_S"),
    ({"HCCL_EXEC_TIMEOUT": "0"}, "never times out"),
    ({"HCCL_EXEC_TIMEOUT": "ten"}, "whole number"),
    ({"HCCL_CONNECT_TIMEOUT": "290"}, "waits 310 s"),
    ({"HCCL_CONNECT_TIMEOUT": "60"}, "120..7200"),
    ({"HCCL_BUFFSIZE": "0"}, "HCCL_BUFFSIZE='0'.*integer"),
    ({"HCCL_BUFFSIZE": "big"}, "HCCL_BUFFSIZE"),
    ({"P2P_HCCL_BUFFSIZE": "-1"}, "P2P_HCCL_BUFFSIZE"),
])
def test_bad_user_values_are_phyx_errors_naming_the_fix(env, match):
    with pytest.raises(ParallelConfigError, match=match):
        hccl_env_defaults(300, env)


def test_user_values_that_fit_are_accepted():
    env = {"HCCL_EXEC_TIMEOUT": "200", "HCCL_CONNECT_TIMEOUT": "150", "HCCL_BUFFSIZE": "50",
           "P2P_HCCL_BUFFSIZE": "0"}
    assert hccl_env_defaults(300, env)["TORCH_HCCL_ASYNC_ERROR_HANDLING"] == "1"


class _FakeNpu(NpuBackend):
    def __init__(self):   # no torch_npu needed for the env logic
        pass


def test_comm_passes_its_timeout_to_the_npu_backend(monkeypatch):
    for k in ("HCCL_EXEC_TIMEOUT", "HCCL_CONNECT_TIMEOUT", "HCCL_BUFFSIZE", "P2P_HCCL_BUFFSIZE"):
        monkeypatch.delenv(k, raising=False)
    assert _dist_env_defaults(_FakeNpu(), 1800.0) == {**hccl_timeouts(1800),
                                                      "TORCH_HCCL_ASYNC_ERROR_HANDLING": "1"}
    monkeypatch.setenv("PHYX_DIST_TIMEOUT_S", "900")
    assert _FakeNpu().dist_env_defaults()["HCCL_EXEC_TIMEOUT"] == hccl_timeouts(900)["HCCL_EXEC_TIMEOUT"]

    class OldPlugin:   # a plug-in written before the timeout argument
        def dist_env_defaults(self):
            return {"X": "1"}
    assert _dist_env_defaults(OldPlugin(), 300.0) == {"X": "1"}


@pytest.mark.parametrize("raw", ["abc", "0", "-5", "inf", "nan"])
def test_bad_phyx_dist_timeout_is_a_clear_error(raw):
    with pytest.raises(CommError, match="PHYX_DIST_TIMEOUT_S.*positive number of seconds"):
        dist_timeout_s({"PHYX_DIST_TIMEOUT_S": raw})
    assert dist_timeout_s({}) == DEFAULT_TIMEOUT_S
    assert dist_timeout_s({"PHYX_DIST_TIMEOUT_S": "1800"}) == 1800.0


# ------------------------------------------------------------------------- buffer estimate
def test_ring_attention_adds_point_to_point_buffers():
    ulysses = hccl_buffer_cost(ParallelConfig(1, 4, 1), buffsize_mb=200, p2p_buffsize_mb=20)
    ring = hccl_buffer_cost(ParallelConfig(1, 4, 1), buffsize_mb=200, p2p_buffsize_mb=20,
                            sp_attention="ring")
    assert ulysses["mb_per_rank"] == 2 * 2 * 200 and ulysses["p2p_mb"] == 0
    # two peers (next and previous rank) x 2 (send + receive) x 20 MB
    assert ring["p2p_comms_per_rank"] == 2 and ring["mb_per_rank"] == 800 + 80
    two = hccl_buffer_cost(ParallelConfig(1, 2, 1), buffsize_mb=200, p2p_buffsize_mb=20,
                           sp_attention="ring")
    assert two["p2p_comms_per_rank"] == 1 and two["p2p_mb"] == 40
    off = hccl_buffer_cost(ParallelConfig(1, 4, 1), buffsize_mb=200, p2p_buffsize_mb=0,
                           sp_attention="ring")
    assert off["p2p_mb"] == 0   # P2P_HCCL_BUFFSIZE=0: point-to-point rides the group communicator


def test_ring_volume_replaces_the_all_to_all():
    shape = PRESETS["wan2.1-1.3b-480p"]
    v = comm_volume(shape, ParallelConfig(1, 4, 1), sp_attention="ring")["per_layer"]
    one = -(-shape.seq_len // 4) * shape.head_dim * shape.dtype_bytes
    assert "sp_all_to_all" not in v and v["ring_kv"] == 3 * one * 2 * shape.kv_heads
    # ring needs no head split: sp may exceed what Ulysses allows
    assert plan(shape, ParallelConfig(1, 8, 1), sp_attention="ring")["hccl"]["p2p_comms_per_rank"] == 2


def test_plan_cli_ring_and_bad_env(capsys, monkeypatch):
    from phyx.cli import main

    monkeypatch.delenv("P2P_HCCL_BUFFSIZE", raising=False)
    monkeypatch.delenv("HCCL_BUFFSIZE", raising=False)
    assert main(["parallel", "plan", "--layout", "1x4x1", "--sp-attention", "ring"]) == 0
    out = capsys.readouterr().out
    assert "ring_kv" in out and "2 point-to-point communicators" in out and "880 MB per rank" in out
    monkeypatch.setenv("HCCL_BUFFSIZE", "lots")
    assert main(["parallel", "plan", "--layout", "1x2x1"]) == 2
    assert "HCCL_BUFFSIZE='lots'" in capsys.readouterr().err
