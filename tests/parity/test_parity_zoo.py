"""Model-level parity on the real models' tiny configs: cpu vs npu-emulated passes for every model
in fp32 and bf16; planted bugs (RoPE tables built in bf16, the NPU mask not inverted) are caught
and located at the right layer; reports (terminal, markdown, HTML, JSON) label the emulated side
EMULATED and never count it as an NPU result; `phyx parity record --model <zoo name>` works across
separate processes."""
from __future__ import annotations

import json

import pytest
import torch

import phyx
from phyx.testing import run_cli
from phyx.tools.parity import metrics as M
from phyx.tools.parity.compare import format_compare
from phyx.tools.parity.model import get_model_spec, registered_models, run_model_parity
from phyx.tools.parity.zoo import MODELS

BACKENDS = ["cpu", "npu-emulated"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _needs_npu_emulated():
    from phyx.tools.parity.backends import resolve_backends

    if "npu-emulated" not in resolve_backends(None)[0]:
        pytest.skip("npu-emulated backend not available")


def test_every_model_is_registered_and_rebuilds_from_its_recorded_config():
    assert set(MODELS) <= set(registered_models())
    assert len(MODELS) == 8
    for name in MODELS:  # `compare A --live` rebuilds the spec from A's manifest config
        spec = get_model_spec(name, seed=3)
        again = get_model_spec(name, json.loads(json.dumps(spec.config)), 3)
        assert again.config == spec.config, name
        a, b = spec.build().state_dict(), again.build().state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("name", MODELS)
def test_cpu_vs_npu_emulated_passes(name, dtype):
    res = run_model_parity(get_model_spec(name), BACKENDS, dtype)
    rep = res.reports[0]
    text = format_compare(rep)
    assert not res.failed, text
    assert not res.runs["npu-emulated"].manifest["replay_errors"], text
    assert rep.rows and all(r.evidence == "replay" for r in rep.rows), text
    assert sum(1 for r in rep.rows if r.oracle) >= len(rep.rows) - 1  # float64 oracle ratios
    assert rep.b["kernels"]["attention"].startswith("torch_npu")       # the NPU path really ran
    assert "rope_tables" in {r.name for r in rep.rows}                  # host-side table probe
    assert rep.b["emulated"] and not rep.npu_result and "EMULATED" in text
    # same inputs on both sides, and timesteps / sigmas entered as float64 from the host
    a, b = res.runs["cpu"], res.runs["npu-emulated"]
    assert a.manifest["inputs"] == b.manifest["inputs"]
    assert any(v["dtype"] == "float64" for v in a.manifest["inputs"].values())


def _bf16_tables_on_npu(monkeypatch):
    from phyx.ops import rope_tables

    good = rope_tables.to_cos_sin

    def tables(angles, device=None):
        if phyx.get_backend().name == "npu-emulated":  # planted on side B only
            a = angles.to(torch.bfloat16)
            return a.cos().float().to(device), a.sin().float().to(device)
        return good(angles, device)

    monkeypatch.setattr(rope_tables, "to_cos_sin", tables)


def test_wan_rope_tables_built_in_bf16_located(monkeypatch):
    _bf16_tables_on_npu(monkeypatch)
    rep = run_model_parity(get_model_spec("tiny-wan-t2v"), BACKENDS, "fp32").reports[0]
    assert rep.failed and rep.first_divergence == "rope_tables", format_compare(rep)
    assert rep.first_divergence_evidence == "replay"
    rows = {r.name: r for r in rep.rows}
    assert rows["rope_tables"].oracle["out.1"]["worse"] == "B"
    # replay feeds A's tables to the blocks: they are not blamed for the drift they carry
    assert rows["blocks.0.self_attn"].status == M.PASS
    assert rows["blocks.0.self_attn"].worst("accumulated") > 100 * rows["blocks.0.self_attn"].worst("local")


def test_npu_mask_not_inverted_located(monkeypatch):
    import phyx_npu.translate as tr

    monkeypatch.setattr(tr, "to_npu_mask", lambda keep: keep)  # planted: keep-mask passed as is
    rep = run_model_parity(get_model_spec("tiny-cosmos-predict2-t2i"), BACKENDS, "fp32").reports[0]
    assert rep.failed and rep.first_divergence == "transformer_blocks.0.attn2", format_compare(rep)
    failing = {r.name for r in rep.rows if r.status == M.FAIL}
    assert failing <= {"transformer_blocks.0.attn2", "transformer_blocks.0",
                       "transformer_blocks.1.attn2", "transformer_blocks.1"}
    # Wan's path passes no mask on one device: the same planted bug cannot show there
    assert not run_model_parity(get_model_spec("tiny-wan-t2v"), BACKENDS, "fp32").failed


def test_reports_label_emulated_everywhere(monkeypatch, tmp_path):
    import phyx_npu.translate as tr
    from phyx.tools.parity.report import write_compare_report

    monkeypatch.setattr(tr, "to_npu_mask", lambda keep: keep)
    rep = run_model_parity(get_model_spec("tiny-cosmos-predict2-v2w"), BACKENDS, "fp32",
                           oracle=False).reports[0]
    md = open(write_compare_report(rep, str(tmp_path / "r"))).read()
    html = (tmp_path / "r" / "report.html").read_text()
    for text in (format_compare(rep), md, html):
        assert "EMULATED" in text and "not an NPU result" in text.replace("never an NPU result", "not an NPU result")
    assert "transformer_blocks.0.attn2" in html and "class='FAIL'" in html and "first divergence" in html
    d = json.loads(json.dumps(rep.to_dict(), default=str))
    assert d["emulated"] is True and d["npu_result"] is False and d["b"]["emulated"] is True


def _cli(args, backend, cwd):
    return run_cli(["parity", *args], backend=backend, cwd=cwd)


def test_record_zoo_model_on_a_compare_on_b(tmp_path):
    """`phyx parity record --model tiny-lingbot` in two processes with separate environments
    (cpu; npu-emulated replaying A's layers), compared here with markdown + HTML reports."""
    from phyx.tools.parity import artifact as A
    from phyx.tools.parity.compare import compare_runs
    from phyx.tools.parity.report import write_compare_report

    m = ["--model", "tiny-lingbot"]
    ra = _cli(["record", *m, "--out", "A"], "cpu", tmp_path)
    assert ra.returncode == 0, ra.stderr[-3000:]
    rb = _cli(["record", *m, "--out", "B", "--replay-from", "A"], "npu-emulated", tmp_path)
    assert rb.returncode == 0, rb.stderr[-3000:]
    assert "(EMULATED)" in rb.stdout
    a, b = A.read(str(tmp_path / "A")), A.read(str(tmp_path / "B"))
    assert b.manifest["environment"]["env"]["PHYX_BACKEND"] == "npu-emulated"
    rep = compare_runs(a, b)
    text = format_compare(rep)
    assert rep.verdict == M.PASS and "EMULATED" in text, text
    names = {r.name for r in rep.rows}
    assert {"rope_tables", "patch_embedding_wancamctrl", "blocks.1.cross_attn"} <= names
    assert all(r.evidence == "replay" for r in rep.rows)
    write_compare_report(rep, str(tmp_path / "rep"))
    assert "EMULATED" in (tmp_path / "rep" / "report.html").read_text()
    assert rep.to_dict()["npu_result"] is False
