"""`phyx generate` end to end with the tiny models: every model/task on the cpu backend and on
npu-emulated (same seed -> same video within tolerance), files + sidecar, CLI refusals."""
from __future__ import annotations

import json

import pytest
import torch

import phyx
from phyx.cli.generate import _quiet_libraries
from phyx.pipelines import GenerateArgs, generate, registry

SMALL = dict(height=32, width=32, frames=5, steps=2, progress=False, write=False)
CASES = [  # (model, task)
    ("tiny-wan", "t2v"), ("tiny-wan-i2v", "i2v"), ("tiny-wan-ti2v", "t2v"), ("tiny-wan-ti2v", "i2v"),
    ("tiny-wan-a14b", "t2v"), ("tiny-wan-a14b-i2v", "i2v"), ("tiny-lingbot", "i2v"),
    ("tiny-cosmos-predict2", "t2i"), ("tiny-cosmos-predict2-v2w", "v2w"),
    ("tiny-cosmos3", "t2v"), ("tiny-cosmos3", "i2v"), ("tiny-cosmos3", "t2av"),
]


def _has_backend(name):
    try:
        ok, _ = phyx.backend.backend_class(name).probe()
        return ok
    except Exception:
        return False


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PHYX_CACHE_DIR", str(tmp_path_factory.mktemp("phyx_cache")))
    _quiet_libraries()
    yield
    phyx.set_backend("cpu")
    mp.undo()


def _run(model, task, backend, **kw):
    args = dict(SMALL, **kw)
    if task == "t2i":
        args["frames"] = None
    return generate(GenerateArgs(model=model, task=task, backend=backend, **args))


@pytest.fixture(scope="module")
def cpu_results():
    return {c: _run(*c, "cpu") for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=[f"{m}-{t}" for m, t in CASES])
def test_runs_end_to_end_on_cpu(cpu_results, case):
    r = cpu_results[case]
    frames = 1 if case[1] == "t2i" else 5
    assert r["video"].shape == (3, frames, 32, 32)
    assert torch.isfinite(r["latents"]).all() and r["video"].abs().max() <= 1.0
    assert r["video"].std() > 1e-3  # not a constant picture
    assert r["record"]["task"] == case[1]
    if case[1] == "t2av":
        wav, rate = r["wav"]
        assert wav.dim() == 2 and wav.shape[-1] > 0 and rate > 0 and torch.isfinite(wav).all()


@pytest.mark.skipif(not _has_backend("npu-emulated"), reason="npu-emulated backend not available")
@pytest.mark.parametrize("case", CASES, ids=[f"{m}-{t}" for m, t in CASES])
def test_same_seed_same_video_on_npu_emulated(cpu_results, case):
    ref = cpu_results[case]
    r = _run(*case, "npu-emulated")
    lat_err = ((r["latents"] - ref["latents"]).norm() / ref["latents"].norm()).item()
    assert lat_err < 1e-4, f"latent relative L2 {lat_err:.2e}"
    torch.testing.assert_close(r["video"], ref["video"], atol=1e-3, rtol=0)
    phyx.set_backend("cpu")


def test_seed_changes_the_video(cpu_results):
    other = _run("tiny-wan", "t2v", "cpu", seed=1)
    assert not torch.allclose(other["latents"], cpu_results[("tiny-wan", "t2v")]["latents"])


def test_a14b_switches_expert_and_guidance(cpu_results):
    rec = cpu_results[("tiny-wan-a14b", "t2v")]["record"]
    assert rec["denoiser"]["expert_boundary_timestep"] == pytest.approx(875.0)
    one_expert = _run("tiny-wan-a14b", "t2v", "cpu", guidance_high=5.0)  # same guidance on both experts
    assert not torch.allclose(one_expert["latents"], cpu_results[("tiny-wan-a14b", "t2v")]["latents"])


def test_writes_mp4_and_sidecar(tmp_path):
    out = tmp_path / "tiny.mp4"
    r = generate(GenerateArgs(model="tiny-wan", out=str(out), **{**SMALL, "write": True}))
    assert out.is_file() and r["sidecar"].name == "tiny.mp4.json"
    rec = json.loads(r["sidecar"].read_text())
    for key in ("settings", "versions", "backend", "timings", "parallel", "output", "vae_decode"):
        assert key in rec
    assert rec["settings"]["seed"] == 0 and rec["backend"]["name"] == "cpu"
    assert rec["versions"]["torch"] and rec["output"]["sha256_frames"]
    assert len(rec["timings"]["step_s"]) == 2
    from phyx.pipelines.media import read_video
    assert read_video(out).shape == (5, 32, 32, 3)


def test_t2i_writes_png(tmp_path):
    r = generate(GenerateArgs(model="tiny-cosmos-predict2", out=str(tmp_path / "img.png"),
                              **{**SMALL, "frames": None, "write": True}))
    assert (tmp_path / "img.png").is_file() and r["record"]["output"]["frames"] == 1


@pytest.mark.parametrize("argv, msg", [
    (["--frames", "6"], "not 4n+1"),
    (["--height", "40"], "multiple of the VAE stride"),
    (["--sp", "2"], "world size 1 is not cfg x sp x tp"),
    (["--model", "nope"], "unknown model"),
    (["--model", "wan2.2-ti2v"], "needs --checkpoint"),
    (["--camera", "/nonexistent"], "no camera control"),
    (["--task", "i2v"], "does not do i2v"),
    (["--sound"], "--sound needs"),
    (["--model", "tiny-cosmos3", "--height", "40"], "multiple of the VAE stride (16)"),
])
def test_cli_refuses_bad_input_before_model_work(argv, msg, capsys, tmp_path, monkeypatch):
    from phyx.cli import main

    monkeypatch.setenv("PHYX_CACHE_DIR", str(tmp_path))  # nothing may be built
    assert main(["generate", "--out", str(tmp_path / "x.mp4"), *argv]) == 2
    assert msg in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_cli_missing_checkpoint_parts(tmp_path, capsys):
    from phyx.cli import main

    (tmp_path / "ck" / "vae").mkdir(parents=True)
    (tmp_path / "ck" / "vae" / "config.json").write_text("{}")
    assert main(["generate", "--model", "wan2.2-ti2v", "--checkpoint", str(tmp_path / "ck"),
                 "--out", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err
    assert "missing parts" in err and "text_encoder" in err and "transformer" in err


def test_every_tiny_model_is_covered():
    tiny = {n for n, s in registry.SPECS.items() if s.tiny}
    assert tiny <= {m for m, _ in CASES}
