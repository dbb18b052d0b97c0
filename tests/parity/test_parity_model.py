"""Model-level parity on the tiny DiT: capture, replay-based first divergence, float64 oracle,
noise floor, planted bugs caught and located at the right layer, loss parity, reports."""
from __future__ import annotations

import pytest
import torch

import phyx
from phyx.testing.fake_backends import install
from phyx.tools.parity import metrics as M
from phyx.tools.parity import tiny_dit as T
from phyx.tools.parity.capture import Capture
from phyx.tools.parity.compare import compare_runs, format_compare
from phyx.tools.parity.model import get_model_spec, measure_noise_floor, oracle_outputs, record_run, run_model_parity

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fakes(monkeypatch):
    install(monkeypatch)


@pytest.fixture(scope="module")
def spec():
    return get_model_spec("tiny-dit")


def test_capture_order_names_and_modes():
    m = T.build()
    with torch.no_grad(), Capture(m, layers=T.CAPTURE_LAYERS, per_op=True) as cap:
        T.forward(m, T.make_inputs(), "cpu", torch.float32)
    names = [r.name for r in cap.records]
    # children finish before their parent; repeated op calls are numbered
    assert names.index("blocks.0.self_attn") < names.index("blocks.0") < names.index("blocks.1.self_attn")
    assert "blocks.0.self_attn/op:rope#1" in names and "blocks.0.cross_attn/op:attention" in names
    assert "blocks.0.self_attn.qkv" not in names  # '*' matches one path component
    with torch.no_grad(), Capture(m, layers=["blocks.*"], mode="stats") as cap2:
        T.forward(m, T.make_inputs(), "cpu", torch.float32)
    r = cap2.records[0]
    assert not r.tensors and len(r.stats["out"]["sample"]) == 256
    with pytest.raises(ValueError, match="no module matches"):
        Capture(m, layers=["nope.*"])


def test_clean_twin_passes_with_oracle(fakes, spec):
    for dtype in ("fp32", "bf16"):
        res = run_model_parity(spec, ["cpu", "cpu-twin"], dtype)
        rep = res.reports[0]
        assert not res.failed, format_compare(rep)
        assert all(r.evidence == "replay" for r in rep.rows)
        assert any(r.oracle for r in rep.rows)


def test_rope_tables_built_in_bf16_located(fakes, spec, monkeypatch):
    good = T.RopeTables.build_tables

    def maybe_bf16(self, device):
        cos, sin = good(self, device)
        if phyx.get_backend().name == "cpu-twin":  # the bug only on side B
            cos, sin = cos.bfloat16().float(), sin.bfloat16().float()
        return cos, sin

    monkeypatch.setattr(T.RopeTables, "build_tables", maybe_bf16)
    rep = run_model_parity(spec, ["cpu", "cpu-twin"], "fp32").reports[0]
    assert rep.failed and rep.first_divergence == "rope", format_compare(rep)
    assert rep.first_divergence_evidence == "replay"
    # replay feeds A's tables to the blocks: they are not blamed for the drift
    rows = {r.name: r for r in rep.rows}
    assert rows["blocks.0.self_attn"].status == M.PASS
    assert rows["blocks.0.self_attn"].worst("accumulated") > rows["blocks.0.self_attn"].worst("local")
    assert rows["rope"].oracle["out.0"]["worse"] == "B"


def test_mask_not_inverted_located(fakes, spec):
    rep = run_model_parity(spec, ["cpu", "planted-mask"], "fp32").reports[0]
    assert rep.first_divergence == "blocks.0.cross_attn", format_compare(rep)
    failing = {r.name for r in rep.rows if r.status == M.FAIL}
    assert not failing & {"patch_embed", "rope", "blocks.0.self_attn", "blocks.0.ffn"}
    assert "EMULATED" in format_compare(rep)  # the planted side says it is emulated
    rep_op = run_model_parity(spec, ["cpu", "planted-mask"], "fp32", per_op=True,
                              oracle=False).reports[0]
    assert rep_op.first_divergence == "blocks.0.cross_attn/op:attention"


def test_accumulated_only_without_replay(fakes, spec):
    a = record_run(spec, "cpu", "fp32")
    b = record_run(spec, "planted-mask", "fp32")  # no replay_from
    rep = compare_runs(a, b)
    assert rep.failed and rep.first_divergence_evidence == "accumulated"
    assert any("accumulated drift" in n for n in rep.notes)


def test_noise_floor_two_kernels_of_one_vendor(spec):
    a = record_run(spec, "cpu", "bf16")
    floor = measure_noise_floor(spec, a, "cpu")  # reference vs torch.sdpa attention
    assert floor["patch_embed"] == 0.0           # same kernel twice: deterministic
    assert floor["blocks.0.self_attn"] > 0.0     # two attention kernels round differently
    rep = compare_runs(a, a, noise_floor=floor)
    row = {r.name: r for r in rep.rows}
    assert row["blocks.0.self_attn"].limit_rel_l2 >= row["patch_embed"].limit_rel_l2


def test_float64_oracle_is_float64(spec):
    a = record_run(spec, "cpu", "fp32")
    orc = oracle_outputs(spec, a)
    assert orc["blocks.0"]["out"].dtype == torch.float64
    err = M.compare(a.output(a.layer("blocks.0"), "out"), orc["blocks.0"]["out"]).rel_l2
    assert 0 < err < 1e-5


def test_loss_parity_clean_and_planted(fakes, spec):
    from phyx.tools.parity import loss as L

    inputs = spec.make_inputs(0)
    base = L.train(spec.build, inputs, spec.forward, "cpu", steps=4)
    twin = L.train(spec.build, inputs, spec.forward, "cpu-twin", steps=4, policy="fast")
    ok = L.compare_training(base, twin, window=2)
    assert not ok.failed, ok.text()
    assert max(ok.loss_windows) < 1e-5
    bad = L.compare_training(base, L.train(spec.build, inputs, spec.forward, "planted-swiglu",
                                           steps=4, policy="fast"), window=2)
    assert bad.failed
    failing = [n for n, g in bad.grads.items() if g["status"] == M.FAIL]
    assert any("ffn" in n for n in failing)


def test_reports_markdown_and_png(fakes, spec, tmp_path):
    from phyx.tools.parity.report import plot_loss_curves, write_compare_report

    rep = run_model_parity(spec, ["cpu", "planted-mask"], "fp32", oracle=False).reports[0]
    md = write_compare_report(rep, str(tmp_path / "rep"))
    text = open(md).read()
    assert "EMULATED" in text and "blocks.0.cross_attn" in text and "**FAIL**" in text
    png = tmp_path / "rep" / "layer_error.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    p = plot_loss_curves({"cpu": [1.0, 0.9], "npu-emulated (EMULATED)": [1.0, 0.91]},
                         str(tmp_path / "loss.png"))
    assert open(p, "rb").read(4) == b"\x89PNG"


def _npu_emulated():
    from phyx.tools.parity.backends import resolve_backends

    if "npu-emulated" not in resolve_backends(None)[0]:
        pytest.skip("npu-emulated backend not available")


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_cpu_vs_npu_emulated_passes(spec, dtype):
    _npu_emulated()
    res = run_model_parity(spec, ["cpu", "npu-emulated"], dtype)
    rep = res.reports[0]
    assert not res.failed, format_compare(rep)
    assert rep.b["emulated"] and "EMULATED" in format_compare(rep)
    assert rep.b["kernels"]["attention"].startswith("torch_npu")  # the NPU path really ran


def test_npu_mask_not_inverted_located(spec, monkeypatch):
    _npu_emulated()
    import phyx_npu.translate as tr

    monkeypatch.setattr(tr, "to_npu_mask", lambda keep: keep)  # planted: mask meaning kept
    rep = run_model_parity(spec, ["cpu", "npu-emulated"], "fp32").reports[0]
    assert rep.first_divergence == "blocks.0.cross_attn", format_compare(rep)
    assert {r.name for r in rep.rows if r.status == M.FAIL} <= {
        "blocks.0.cross_attn", "blocks.0", "blocks.1.cross_attn", "blocks.1"}


def test_a_new_metric_column_shows_in_every_report_format(fakes, spec, monkeypatch):
    """Showing a metric is one line in METRIC_COLUMNS: the text table, markdown and HTML all read it."""
    from phyx.tools.parity import compare as C
    from phyx.tools.parity.report import compare_html, compare_markdown

    rep = run_model_parity(spec, ["cpu", "cpu-twin"], "fp32", oracle=False).reports[0]
    extra = C.MetricColumn("max rel err", lambda r: r.worst("auto", "max_rel"), ".3e", 14)
    monkeypatch.setattr(C, "METRIC_COLUMNS", (*C.METRIC_COLUMNS, extra))
    import phyx.tools.parity.report as R
    monkeypatch.setattr(R, "METRIC_COLUMNS", C.METRIC_COLUMNS)
    row = next(r for r in rep.rows if r.local)
    cell = extra.text(row)
    assert cell != "-"
    for text in (format_compare(rep), compare_markdown(rep, None), compare_html(rep, None)):
        assert "max rel err" in text and cell in text
