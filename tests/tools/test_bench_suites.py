"""The benchmark suites as a user runs them: `benchmarks/npu_suite.sh --emulated` is the NPU
machine's run rehearsed on this CPU (npu-emulated backend, tiny shapes). It must produce the same
files an NPU run would: one JSON per step with the backend and the Ascend host settings in effect,
and profiler traces when PROFILE is set."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(sys.platform != "linux", reason="bash suite")
def test_npu_suite_rehearsal_writes_results_settings_and_traces(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TASK_QUEUE_ENABLE", "CPU_AFFINITY_CONF", "PYTORCH_NPU_ALLOC_CONF")}
    env.update(OUT=str(tmp_path), STEPS="ops models", MODELS="wan2.1-1.3b-480p81f", MODES="forward",
               OPS_SECTIONS="attention", PROFILE=str(tmp_path / "prof"), PY=sys.executable,
               CPU_AFFINITY_CONF="1")  # a caller's own setting wins over the suite's default
    proc = subprocess.run(["bash", "benchmarks/npu_suite.sh", "--emulated"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for name in ("ops.json", "models.json"):
        meta = json.loads((tmp_path / name).read_text())["meta"]
        assert meta["backend"] == "npu-emulated", meta["backend"]
        assert meta["host"]["settings"]["TASK_QUEUE_ENABLE"] == "2"
        assert meta["host"]["settings"]["PYTORCH_NPU_ALLOC_CONF"] == "expandable_segments:True"
        assert meta["host"]["settings"]["CPU_AFFINITY_CONF"] == "1"
    models = json.loads((tmp_path / "models.json").read_text())["models"]
    assert {r["impl"] for r in models} == {"phyx", "diffusers"} and all("ms" in r for r in models)
    assert (tmp_path / "prof" / "ops" / "trace.json").is_file()
    for r in models:
        assert (tmp_path / "prof" / "models" / f"{r['case']}-forward-{r['impl']}" / "trace.json").is_file()
    assert "npu-emulated" in (tmp_path / "env.txt").read_text()
