"""Artifacts (atomic, verified, tamper/truncation detected, comparability), determinism switches,
metrics, and "record on machine A, compare on machine B" across separate processes."""
from __future__ import annotations

import json
import os

import pytest
import torch

from phyx.testing import run_cli
from phyx.tools.parity import artifact as A
from phyx.tools.parity import metrics as M
from phyx.tools.parity.compare import compare_runs
from phyx.tools.parity.determinism import determinism_flags, set_determinism
from phyx.tools.parity.model import get_model_spec, record_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_a():
    torch.set_num_threads(1)
    return record_run(get_model_spec("tiny-dit"), "cpu", "fp32")


def test_roundtrip_and_manifest(run_a, tmp_path):
    p = A.write(run_a, str(tmp_path / "a"))
    r = A.read(p)
    assert set(r.tensors) == set(run_a.tensors)
    env = r.manifest["environment"]
    for key in ("backend", "emulated", "versions", "policy", "kernels", "precision_flags",
                "determinism", "devices", "env", "parallel"):
        assert key in env, key
    assert env["kernels"]["attention"] == "torch.sdpa"  # policy 'fast' on cpu
    assert r.manifest["run"]["seed"] == 0 and r.manifest["run"]["dtype"] == "fp32"
    assert r.manifest["inputs"]["x"]["sha256"] == A.tensor_sha256(r.tensors["inputs/x"])
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temp dirs left
    with pytest.raises(A.ArtifactError, match="exists"):
        A.write(run_a, p)


def test_tampered_and_truncated_are_refused(run_a, tmp_path):
    p = A.write(run_a, str(tmp_path / "a"))
    tfile = os.path.join(p, A.TENSORS)
    data = bytearray(open(tfile, "rb").read())
    data[-5] ^= 0xFF
    open(tfile, "wb").write(bytes(data))
    with pytest.raises(A.ArtifactError, match="sha256 mismatch"):
        A.read(p)
    open(tfile, "wb").write(bytes(data[: len(data) // 2]))
    with pytest.raises(A.ArtifactError, match="truncated"):
        A.read(p)
    p2 = A.write(run_a, str(tmp_path / "b"))
    m = json.load(open(os.path.join(p2, A.MANIFEST)))
    m["run"]["seed"] = 1
    json.dump(m, open(os.path.join(p2, A.MANIFEST), "w"))
    with pytest.raises(A.ArtifactError, match="manifest checksum"):
        A.read(p2)
    open(os.path.join(p2, A.MANIFEST), "w").write('{"format": "phyx-par')
    with pytest.raises(A.ArtifactError, match="unreadable manifest"):
        A.read(p2)


def test_not_comparable_runs_are_refused(run_a):
    spec = get_model_spec("tiny-dit", seed=1)
    other = record_run(spec, "cpu", "fp32")
    with pytest.raises(A.NotComparableError, match="seed"):
        compare_runs(run_a, other)
    bf16 = record_run(get_model_spec("tiny-dit"), "cpu", "bf16")
    with pytest.raises(A.NotComparableError, match="dtype"):
        compare_runs(run_a, bf16)


def test_determinism_switches(monkeypatch):
    """The switches come from the backend's determinism_env hook; every registered backend's
    names are recorded, set or not."""
    from phyx_npu.emulated import NpuEmulatedBackend

    for k in ("HCCL_DETERMINISTIC", "CLOSE_MATMUL_K_SHIFT", "INF_NAN_MODE_ENABLE",
              "ASCEND_LAUNCH_BLOCKING", "CUBLAS_WORKSPACE_CONFIG", "CUDA_LAUNCH_BLOCKING"):
        monkeypatch.delenv(k, raising=False)

    was = torch.are_deterministic_algorithms_enabled()
    try:
        b = NpuEmulatedBackend()
        b.set_reduced_precision_matmul(True)
        flags = set_determinism(b, debug=True)
        assert flags["torch_deterministic"]
        assert flags["precision"] == {"npu.matmul.allow_hf32": False, "npu.conv.allow_hf32": False}
        assert flags["env"]["HCCL_DETERMINISTIC"] == "true"
        assert flags["env"]["CLOSE_MATMUL_K_SHIFT"] == "1"
        assert flags["env"]["ASCEND_LAUNCH_BLOCKING"] == "1"
        assert flags["env"]["INF_NAN_MODE_ENABLE"] == "1"
        assert flags["env"]["CUBLAS_WORKSPACE_CONFIG"] is None  # recorded, but not a CUDA run
        assert flags["env"]["CUDA_LAUNCH_BLOCKING"] is None
        monkeypatch.delenv("ASCEND_LAUNCH_BLOCKING")
        set_determinism(b, debug=False)
        assert "ASCEND_LAUNCH_BLOCKING" not in os.environ   # debug switches only when asked
    finally:
        torch.use_deterministic_algorithms(was)
    assert determinism_flags(b)["torch_deterministic"] == was


def test_metrics_edge_cases():
    e = torch.tensor([1.0, float("-inf"), 2.0])
    assert M.compare(e.clone(), e).nonfinite_mismatch == 0          # same -inf is exact
    bad = M.compare(torch.tensor([1.0, float("nan"), 2.0]), e)
    assert bad.nan == 1 and M.verdict(bad, M.threshold_for(torch.float32))[0] == M.FAIL
    assert M.verdict(M.compare(torch.ones(3), torch.ones(4)), M.threshold_for(torch.float32))[0] == M.FAIL
    x = torch.rand(2, 16, 16)
    assert M.psnr(x, x) == float("inf") and abs(M.ssim(x, x) - 1) < 1e-12
    noisy = x + 0.05 * torch.randn_like(x)
    assert 15 < M.psnr(noisy, x) < 40 and M.ssim(noisy, x) < 0.99
    m = M.compare(x * (1 + 2e-3), x)
    assert m.within_0p1 == 0.0 and m.within_0p5 == 1.0
    assert abs(m.max_rel - 2e-3) < 1e-6 and abs(m.rel_l2 - 2e-3) < 1e-6


def _cli(args, backend, cwd):
    return run_cli(["parity", *args], backend=backend, cwd=cwd)


def test_record_on_machine_a_compare_on_machine_b(tmp_path):
    """Two processes with separate environments; B replays A's layers; a third compares."""
    from phyx.tools.parity.backends import resolve_backends

    b_backend = "npu-emulated" if "npu-emulated" in resolve_backends(None)[0] else "cpu"
    ra = _cli(["record", "--policy", "reference", "--out", "A"], "cpu", tmp_path)
    assert ra.returncode == 0, ra.stderr[-3000:]
    rb = _cli(["record", "--out", "B", "--replay-from", "A"], b_backend, tmp_path)
    assert rb.returncode == 0, rb.stderr[-3000:]
    rc = _cli(["compare", "A", "B", "--report", "rep", "--json", "c.json"], "cpu", tmp_path)
    assert rc.returncode == 0, rc.stdout[-3000:] + rc.stderr[-3000:]
    assert "VERDICT: PASS" in rc.stdout and "replay" in rc.stdout
    b = A.read(str(tmp_path / "B"))
    assert b.manifest["environment"]["backend"] == b_backend
    assert b.manifest["environment"]["env"]["PHYX_BACKEND"] == b_backend
    assert b.manifest["environment"]["determinism"]["torch_deterministic"] is True
    if b_backend == "npu-emulated":
        assert b.manifest["environment"]["emulated"] is True
        assert "EMULATED" in rc.stdout
        assert b.manifest["environment"]["determinism"]["env"]["HCCL_DETERMINISTIC"] == "true"
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["verdict"] == "PASS" and c["first_divergence"] is None
    assert (tmp_path / "rep" / "layer_error.png").exists()
    # a tampered artifact makes compare fail loudly
    tfile = tmp_path / "B" / A.TENSORS
    tfile.write_bytes(tfile.read_bytes()[:-100])
    rt = _cli(["compare", "A", "B"], "cpu", tmp_path)
    assert rt.returncode == 2 and "truncated" in rt.stderr
