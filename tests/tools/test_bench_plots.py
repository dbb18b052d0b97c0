"""phyx bench plot: PNGs from a quick CPU result, from hand-built model and multi-GPU results and
from a real recorded file; the drawn numbers are the file's; a foreign JSON gets a clear error."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from phyx.tools.bench.env import write_json
from phyx.tools.bench.ops import run_ops
from phyx.tools.bench.plots import NotAPhyxResultError, load_result, plot_file
from phyx.tools.parity.backends import using_backend

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
META = {"date": "2026-01-02", "device": "Test GPU", "backend": "cuda", "emulated": False,
        "policy": "fast", "kernels": {}}


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE


@pytest.fixture(scope="module")
def quick_ops_file(tmp_path_factory):
    """A real `phyx bench ops --quick` result (peaks and fused only: well under a second)."""
    with using_backend("cpu", "fast"):
        result = run_ops(quick=True, sections=("peaks", "fused"), log=lambda *_: None)
    path = tmp_path_factory.mktemp("quick") / "cpu-ops.json"
    write_json(result, str(path))
    return path


def test_quick_cpu_ops_plot_draws_the_files_numbers(quick_ops_file, tmp_path):
    written = plot_file(quick_ops_file, tmp_path)
    # no attention section in this run: that plot is skipped, not crashed on
    assert [p.name for p in written] == ["cpu-ops-fused.png"]
    png, series = next(iter(written.items()))
    assert _is_png(png)
    result = json.loads(quick_ops_file.read_text())
    rec = next(r for r in result["fused"] if r["kernel"] == "phyx.ops")
    assert series["gbps"]["phyx.ops"][rec["case"]] == rec["gbps"]
    assert series["copy_gbps"] == result["peaks"]["copy_gbps"]
    assert [p.name for p in tmp_path.iterdir()] == ["cpu-ops-fused.png"]  # no temp file left


def test_hand_built_attention_and_models(tmp_path):
    ops_path, models_path = tmp_path / "ops.json", tmp_path / "models.json"
    ops_path.write_text(json.dumps({
        "kind": "phyx-bench-ops", "meta": META, "peaks": {"matmul_tflops": 800.0, "copy_gbps": 4000.0},
        "attention": [
            {"case": "wan", "kernel": "phyx.ops.attention", "tflops": 570.0, "ms": 11.5},
            {"case": "wan", "kernel": "direct:torch.sdpa", "tflops": 568.0, "ms": 11.6},
            {"case": "wan", "kernel": "phyx:sdpa.efficient", "error": "refused: no GQA"}]}))
    models_path.write_text(json.dumps({
        "kind": "phyx-bench-models", "meta": META, "models": [
            {"case": "wan-14b", "mode": "forward", "impl": "phyx", "ms": 3000.0},
            {"case": "wan-14b", "mode": "forward", "impl": "diffusers", "ms": 3300.0},
            {"case": "wan-14b", "mode": "train", "impl": "phyx", "error": "out of memory"},
            {"case": "cosmos3", "skipped": "ModuleNotFoundError"}]}))
    attention = plot_file(ops_path, tmp_path)[tmp_path / "ops-attention.png"]
    assert attention["tflops"]["direct:torch.sdpa"] == {"wan": 568.0}
    assert "phyx:sdpa.efficient" not in attention["tflops"]  # a refused kernel draws no bar
    assert attention["matmul_peak_tflops"] == 800.0
    models = plot_file(models_path, tmp_path)[tmp_path / "models-models.png"]
    assert models["speedup_vs_diffusers"]["forward"]["wan-14b"] == pytest.approx(1.1)
    assert "train" not in models["ms"]  # the OOM row is left out
    for name in ("ops-attention.png", "models-models.png"):
        assert _is_png(tmp_path / name)


def _breakdown(total, **ms):
    return {"source": "cuda kernels", "total_ms": total, "ms_per_category": ms,
            "top": [{"name": "fmha_kernel", "ms": ms.get("attention", 0.0), "calls": 4,
                     "category": "attention"}]}


def test_breakdown_plot_and_compiled_title(tmp_path):
    base = {"kind": "phyx-bench-models", "meta": META, "layers": 4, "compiled": True}
    rows = [
        {"case": "wan-14b", "mode": "forward", "impl": "phyx", "ms": 290.0,
         "breakdown": _breakdown(288.7, attention=152.3, matmul=96.9, triton=12.0, elementwise=15.2,
                                 **{"copy/cast": 5.7, "norm": 6.3, "other": 0.3})},
        {"case": "wan-14b", "mode": "forward", "impl": "diffusers", "ms": 318.0,
         "breakdown": _breakdown(325.2, attention=153.6, matmul=97.9, elementwise=41.2,
                                 **{"copy/cast": 23.3, "norm": 8.8, "other": 0.4})},
        {"case": "wan-14b", "mode": "train", "impl": "phyx", "error": "out of memory"}]
    with_bd, without_bd = tmp_path / "bd.json", tmp_path / "plain.json"
    with_bd.write_text(json.dumps({**base, "models": rows}))
    without_bd.write_text(json.dumps({**base, "models": [
        {k: v for k, v in r.items() if k != "breakdown"} for r in rows]}))
    written = plot_file(with_bd, tmp_path)
    assert sorted(p.name for p in written) == ["bd-breakdown.png", "bd-models.png"]
    series = written[tmp_path / "bd-breakdown.png"]
    assert series["ms_per_category"]["wan-14b"]["forward"]["diffusers"]["elementwise"] == 41.2
    assert series["total_ms"]["wan-14b"]["forward"]["phyx"] == 288.7
    assert "train" not in series["ms_per_category"]["wan-14b"]  # the OOM row has no breakdown
    assert series["categories"][:3] == ["attention", "matmul", "elementwise"]  # fixed order
    assert _is_png(tmp_path / "bd-breakdown.png")
    # a models file without breakdowns: the step-time plot only, no breakdown PNG
    assert [p.name for p in plot_file(without_bd, tmp_path)] == ["plain-models.png"]
    assert not (tmp_path / "plain-breakdown.png").exists()


def test_models_title_says_compiled_and_layers(tmp_path, monkeypatch):
    from phyx.tools.bench import plots

    titles = []
    real_title = plots._title
    monkeypatch.setattr(plots, "_title", lambda what, result: titles.append(what) or real_title(what, result))
    rows = [{"case": "c", "mode": "forward", "impl": "phyx", "ms": 1.0}]
    for name, extra in (("eager", {"layers": None}), ("compiled", {"compiled": True, "layers": 4})):
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"kind": "phyx-bench-models", "meta": META, "models": rows, **extra}))
        plot_file(tmp_path / f"{name}.json", tmp_path)
    assert "torch.compile" not in titles[0] and "block" not in titles[0]
    assert "torch.compile" in titles[1] and "first 4 blocks" in titles[1]


def test_one_unmerged_multi_gpu_run(tmp_path):
    run = {"schema": "phyx.multi_gpu_parity/1", "status": "complete", "date": "2026-01-02",
           "world_size": 2, "dtype": "bfloat16", "machine": META,
           "model": {"name": "wan-1.3b", "layers": 30, "full_layers": 30}, "shape": {"res": "480p"},
           "modes": [{"mode": "sp2", "status": "ok", "speedup": 1.9},
                     {"mode": "tp2", "status": "skipped", "reason": "no TP layers"}]}
    path = tmp_path / "one-run.json"
    path.write_text(json.dumps(run))
    (png, series), = plot_file(path, tmp_path).items()
    assert _is_png(png) and series == {"speedup": {"sp2": {"wan-1.3b 480p": 1.9}}, "gpus": [2]}


def test_real_multi_gpu_file(tmp_path):
    src = RESULTS / "2026-11-26-h200x4-multi-gpu.json"
    (png, series), = plot_file(src, tmp_path).items()
    assert png.name == "2026-11-26-h200x4-multi-gpu-multi-gpu.png" and _is_png(png)
    want = next(m["speedup"] for m in json.loads(src.read_text())["runs"]["wan14b_720p"]["modes"]
                if m["mode"] == "sp4")
    assert series["speedup"]["sp4"]["wan-14b 720p\n8/40 blocks"] == want  # 3.40x in RESULTS.md
    assert series["gpus"] == [4]


def test_foreign_json_gets_a_clear_error(tmp_path):
    for name, text in (("foreign.json", '{"hello": 1}'), ("list.json", "[1, 2]"),
                       ("broken.json", "{not json")):
        p = tmp_path / name
        p.write_text(text)
        with pytest.raises(NotAPhyxResultError, match=f"{name}: not .*expected a `phyx bench ops`"):
            load_result(p)


def test_cli_prints_the_paths_and_refuses_foreign_json(quick_ops_file, tmp_path, capsys):
    from phyx.cli import main

    assert main(["bench", "plot", str(quick_ops_file), "--out", str(tmp_path / "plots")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "plots" / "cpu-ops-fused.png")]
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"hello": 1}')
    assert main(["bench", "plot", str(foreign), "--out", str(tmp_path)]) == 2
    assert "not a phyx result" in capsys.readouterr().err
