"""`phyx port run`: what went through the backend, the traps hit at run time, per-layer parity
against float64, the reports (atomic), and one-line errors for bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from phyx.cli import main
from phyx.tools.porting import port_report
from phyx.tools.porting.port_run import PortRunError, run_port

FIX = Path(__file__).parent / "fixtures" / "port_run"


def test_plain_sdpa_port_says_nothing_ran_through_the_backend_first_and_lists_traps():
    res = run_port(str(FIX / "plain_sdpa.py"), "npu-emulated")
    md = port_report.to_markdown(res)
    assert md.splitlines()[0].startswith("NOTHING RAN THROUGH npu-emulated")
    assert res.routed_nothing and port_report.verdict(res).startswith("NOT PROVEN")
    cats = {t["category"]: t for t in res.traps}
    assert set(cats) == {"float64-on-device", "complex-on-device", "device-rng", "native-gelu"}
    lines = {(t["category"], int(t["where"].rsplit(":", 1)[1])) for t in res.traps
             if t["where"].endswith(tuple(f"plain_sdpa.py:{n}" for n in range(1, 60)))}
    assert {("float64-on-device", 18), ("complex-on-device", 19), ("native-gelu", 23),
            ("device-rng", 23)} <= lines, res.traps
    assert cats["native-gelu"]["modules"] == ["blocks.0.mlp.1", "blocks.1.mlp.1"]
    # parity still measured: fp32 against float64, per block and on the output
    assert [r["layer"] for r in res.layers] == ["blocks.0", "blocks.1"]
    assert res.output["ok"] and res.output["rel_l2"] < 1e-5


@pytest.mark.parametrize("backend", ["cpu", "npu-emulated"])
def test_flash_port_routes_attention_through_the_backend_and_passes(backend, tmp_path):
    res = run_port(str(FIX / "flash_block.py"), backend)
    assert res.phyx_calls == {"attention": 2} and not res.routed_nothing
    assert res.modules["0"]["phyx_ops"] == {"attention": 1}
    assert 0 < res.total["backend_flop_share"] < 1
    assert not res.traps and not res.failed and port_report.verdict(res) == "PASS"
    assert all(r["ok"] and r["rel_l2"] < 1e-5 for r in res.layers)
    paths = port_report.write(res, tmp_path / "rep")
    data = json.loads(paths["json"].read_text())
    assert data["verdict"] == "PASS" and data["emulated"] == (backend == "npu-emulated")
    assert paths["md"].read_text().splitlines()[0] == port_report.headline(res)
    assert "<h2" in paths["html"].read_text()
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == [
        "port_report.html", "port_report.json", "port_report.md"]        # no temp files left


def test_port_run_under_autocast_on_the_emulator():
    res = run_port(str(FIX / "flash_block.py"), "npu-emulated", autocast="bf16")
    assert res.phyx_calls == {"attention": 2}
    assert res.output["judged_as"] == "bfloat16" and res.output["ok"]


@pytest.mark.parametrize("driver,msg", [
    ("needs_xfuser.py", r"imports 'xfuser', which phyx_patches does not serve .*import only the files"),
    ("missing.py", r"driver .*missing.py does not exist"),
    ("uses_window.py", r"window_size=\(4, 4\) is not supported; sliding-window attention"),
])
def test_bad_input_is_one_line_naming_the_fix(capsys, driver, msg):
    rc = main(["port", "run", str(FIX / driver), "--backend", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("phyx: error: ") and "\n" not in err
    import re

    assert re.search(msg, err), err


def test_module_factory_target_needs_inputs():
    with pytest.raises(PortRunError, match="--inputs"):
        run_port("json:dumps", "cpu")
