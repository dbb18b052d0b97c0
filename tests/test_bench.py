"""phyx bench on the CPU: a quick ops run writes a complete result file, merge builds the
cross-machine table from two files, and a non-bench JSON is refused with a clear message."""
from __future__ import annotations

import json

import pytest

import phyx
from phyx.bench.env import write_json
from phyx.bench.merge import load, table
from phyx.bench.ops import run_ops
from phyx.parity.backends import using_backend


@pytest.fixture(scope="module")
def quick_result():
    with using_backend("cpu", "fast"):
        return run_ops(quick=True, sections=("fused", "dispatch"), log=lambda *_: None)


def test_quick_ops_result_is_complete(quick_result, tmp_path):
    r = quick_result
    assert r["meta"]["backend"] == "cpu" and r["meta"]["date"]
    assert "TASK_QUEUE_ENABLE" in r["meta"]["host"]["settings"]
    ops_seen = {rec["op"] for rec in r["fused"]}
    assert ops_seen == {"rms_norm", "rope", "modulate"}
    for rec in r["fused"]:
        assert "error" not in rec, rec
        assert rec["ms"] > 0 and rec["gbps"] > 0
        assert rec["parity"]["verdict"] == "PASS", rec
    d = r["dispatch"]
    assert d["attention.phyx_ops"] > 0 and "attention.overhead_us" in d
    path = tmp_path / "r.json"
    write_json(r, str(path))
    assert json.loads(path.read_text())["kind"] == "phyx-bench-ops"


def test_merge_builds_cross_machine_table(quick_result, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    other = json.loads(json.dumps(quick_result, default=str))
    other["meta"].update(backend="npu", device="Ascend910B3", emulated=False)
    for rec in other["fused"]:
        rec["ms"] = rec.get("ms", 1.0) * 2
    write_json(quick_result, str(a))
    write_json(other, str(b))
    text = table(load([str(a), str(b)]))
    assert "Ascend910B3" in text and "| fused | rms_norm_tiny |" in text
    assert "2.00x" in text  # the time ratio column against the first file
    assert "PASS" in text


def test_merge_refuses_foreign_json(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a phyx bench result"):
        load([str(p)])


def test_cli_has_bench_commands():
    from phyx.cli import build_parser

    args = build_parser().parse_args(["bench", "merge", "a.json", "b.json"])
    assert args.files == ["a.json", "b.json"]
    assert phyx.ops  # the CLI imports phyx lazily; the module is importable
