"""Every bad input through the CLI: exit 2, one `phyx: error: ...` line on stderr, no traceback,
and (for generate) nothing built and nothing written. In-process through phyx.cli.main; only
the stdout-onto-a-full-device case needs its own process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from phyx.cli import main


def _refused(capsys, argv, *expect):
    code = main(argv)
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("phyx: error: "), err
    assert "Traceback" not in err + out
    for e in expect:
        assert e in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def gen(tmp_path, monkeypatch):
    """generate argv prefix with an empty model cache that must stay empty."""
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("PHYX_CACHE_DIR", str(cache))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    yield ["generate", "--no-progress"]
    assert not any(cache.iterdir()), "a refused run built a model"


GENERATE_CASES = [
    (["--steps", "250"], "repeats timesteps beyond"),
    (["--steps", "0"], "--steps must be"),
    (["--steps", "-3"], "--steps must be"),
    (["--height", "0"], "--height must be >= 1"),
    (["--width", "-16"], "--width must be >= 1"),
    (["--frames", "0"], "--frames must be >= 1"),
    (["--fps", "0"], "--fps must be > 0"),
    (["--fps", "-2"], "--fps must be > 0"),
    (["--fps", "nan"], "--fps must be a finite number"),
    (["--guidance", "nan"], "--guidance must be a finite number"),
    (["--guidance", "inf"], "--guidance must be a finite number"),
    (["--shift", "0"], "--shift must be > 0"),
    (["--guidance-high", "3"], "high-noise expert"),
    (["--vae-halo", "-1"], "--vae-halo must be >= 0"),
    (["--seed", str(2 ** 64)], "--seed must be in"),
    (["--seed", "-1"], "--seed must be in"),
    (["--dtype", "fp64"], "unknown dtype"),
    (["--steps", "two"], "invalid int"),
    (["--model", "tiny-cosmos-predict2", "--frames", "5", "--out", "{tmp}/x.png"], "one frame"),
    (["--height", "65536", "--width", "65536", "--frames", "4001"], "GiB"),
    (["--out", "{tmp}/x.avi"], "must end in"),
    (["--sp", "3", "--ring", "2"], "must divide --sp"),
    (["--ring", "0"], "--ring must be >= 1"),
]


@pytest.mark.parametrize("argv, msg", GENERATE_CASES, ids=[" ".join(a) for a, _ in GENERATE_CASES])
def test_generate_refuses_bad_values(gen, tmp_path, capsys, argv, msg):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    out = [] if "--out" in argv else ["--out", str(tmp_path / "x.mp4")]
    _refused(capsys, gen + out + argv, msg)
    assert not (tmp_path / "x.mp4").exists()


def test_generate_refuses_a_bad_world_size(gen, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    _refused(capsys, gen + ["--out", str(tmp_path / "x.mp4")], "WORLD_SIZE='two'")


# ---- outputs, checked before any model work ------------------------------------------------------

def test_existing_output_is_not_replaced(gen, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    out.write_bytes(b"mine")
    _refused(capsys, gen + ["--out", str(out)], "already exists", "--overwrite")
    _refused(capsys, gen + ["--out", str(out), "--overwrite"], "not written by phyx")
    assert out.read_bytes() == b"mine"


def test_overwrite_never_replaces_a_directory(gen, tmp_path, capsys):
    d = tmp_path / "x.mp4"
    (d / "keep").mkdir(parents=True)
    _refused(capsys, gen + ["--out", str(d), "--overwrite"], "directory")
    assert (d / "keep").is_dir()


def test_output_under_a_regular_file(gen, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    _refused(capsys, gen + ["--out", str(tmp_path / "file" / "x.mp4")], "is a file, not a directory")


def test_output_onto_a_device_is_refused(gen, tmp_path, capsys):
    link = tmp_path / "x.mp4"
    link.symlink_to(os.devnull)
    _refused(capsys, gen + ["--out", str(link), "--overwrite"], "device")
    assert link.is_symlink() and os.readlink(link) == os.devnull


def test_unwritable_directory(gen, tmp_path, capsys, monkeypatch):
    import errno
    import tempfile

    def readonly(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", readonly)
    _refused(capsys, gen + ["--out", str(tmp_path / "x.mp4")], "Read-only file system")


def test_full_filesystem(gen, tmp_path, capsys, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 100, 0))
    _refused(capsys, gen + ["--out", str(tmp_path / "x.mp4")], "0 bytes free")


def test_missing_ffmpeg_is_found_before_model_work(gen, tmp_path, capsys, monkeypatch):
    import imageio_ffmpeg

    def none():
        raise RuntimeError("No ffmpeg exe could be found")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", none)
    _refused(capsys, gen + ["--out", str(tmp_path / "x.mp4")], "ffmpeg")


# ---- other subcommands ---------------------------------------------------------------------------

OTHER_CASES = [
    (["parallel", "plan", "--layout", "2x2"], "cfg x sp x tp"),
    (["parallel", "plan", "--layout", "2x2x2x2x2"], "cfg x sp x tp"),
    (["parallel", "plan", "--layout", "1x4x1x3"], "ring"),
    (["parallel", "plan", "--layout", "3x1x1"], "cfg must be 1 or 2"),
    (["parallel", "plan", "--heads", "0"], "--heads"),
    (["parallel", "plan", "--hidden", "-5"], "--hidden"),
    (["parallel", "plan", "--hccl-buffsize", "-1"], "--hccl-buffsize"),
    (["parallel", "plan", "--heads", "12", "--kv-heads", "5"], "--kv-heads 5 must divide"),
    (["parallel", "plan", "--layout", "1x1x5"], "does not divide"),
    (["bench", "ops", "--sections", "garbage"], "--sections"),
    (["bench", "ops", "--shapes", "garbage"], "--shapes"),
    (["bench", "models", "--modes", "garbage"], "--modes"),
    (["bench", "models", "--models", "garbage"], "--models"),
    (["bench", "models", "--peak-tflops", "-1"], "--peak-tflops"),
    (["bench", "models", "--layers", "0"], "--layers"),
    (["parity", "loss", "--model", "tiny-wan-t2v", "--steps", "0"], "--steps"),
    (["parity", "loss", "--model", "tiny-wan-t2v", "--steps", "-2"], "--steps"),
    (["parity", "loss", "--model", "tiny-wan-t2v", "--window", "0"], "--window"),
    (["parity", "loss", "--model", "tiny-wan-t2v", "--window", "9", "--steps", "4"], "--window 9"),
    (["parity", "loss", "--model", "tiny-wan-t2v", "--lr", "nan"], "--lr"),
    (["parity", "loss", "--model", "tiny-wan-t2v", "--backends", "cpu,garbage"], "unknown backend 'garbage'"),
    (["parity", "loss", "--model", "tiny-wan-t2v", "--backends", "cpu"], "two different backends"),
    (["parity", "loss", "--model", "os:getcwd", "--backends", "cpu,npu-emulated"], "not a registered"),
    (["parity", "ops", "--backends", "garbage"], "unknown backend 'garbage'"),
    (["parity", "ops", "--backends", "cuda", "--dtypes", "fp32"], "nothing to compare"),
    (["parity", "ops", "--dtypes", "fp64"], "unknown dtype"),
    (["parity", "record", "--model", "os:getcwd", "--out", "A"], "not a registered parity model"),
    (["parity", "record", "--config", "{x", "--out", "A"], "not JSON"),
    (["parity", "record", "--config", "[1, 2]", "--out", "A"], "JSON object"),
    (["parity", "record", "--config", '{"nope": 1}', "--out", "A"], "unknown key(s) nope"),
    (["parity", "record", "--config", '{"dim": -4}', "--out", "A"], "dim=-4"),
    (["parity", "record", "--config", '{"grid": [2, 0, 5]}', "--out", "A"], "grid="),
    (["parity", "record", "--config", '{"eps": NaN}', "--out", "A"], "eps="),
    (["parity", "record", "--dtype", "double", "--out", "A"], "unknown dtype"),
    (["parity", "compare", "A"], "give artifact B"),
    (["info", "--backend", "nope"], "unknown backend 'nope'"),
    (["bench", "ops", "--quick", "--out", os.devnull], "device or special file"),
    (["bench", "models", "--quick", "--out", "."], "is a directory"),
    (["bench", "merge", "x.json", "--out", "{file}/t.md"], "is a file, not a directory"),
    (["bench", "plot", "x.json", "--out", "{file}"], "not a directory"),
    (["parity", "ops", "--out", "."], "is a directory"),
    (["parity", "compare", "A", "B", "--out", "{file}"], "not a directory"),
    (["parity", "loss", "--model", "tiny-wan-t2v", "--out", "{file}/rep"], "is a file"),
    (["convert", "{file}", "--out", os.devnull], "device or special file"),
    (["convert", "/nonexistent.pt"], "not a file"),
    ([], "required"),
    (["nosuch"], "invalid choice"),
]


@pytest.mark.parametrize("argv, msg", OTHER_CASES, ids=[" ".join(a) or "(none)" for a, _ in OTHER_CASES])
def test_subcommands_refuse_bad_input(tmp_path, monkeypatch, capsys, argv, msg):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("not a folder")
    _refused(capsys, [a.replace("{file}", str(tmp_path / "file")) for a in argv], msg)
    assert not (tmp_path / "A").exists()


def test_record_overwrite_replaces_only_an_artifact(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "A" / "precious").mkdir(parents=True)
    _refused(capsys, ["parity", "record", "--out", "A"], "exists", "--overwrite")
    _refused(capsys, ["parity", "record", "--out", "A", "--overwrite"], "not a parity artifact")
    assert (tmp_path / "A" / "precious").is_dir()
    (tmp_path / "f").write_text("x")
    _refused(capsys, ["parity", "record", "--out", "f/A"], "is a file, not a directory")


def test_huge_parity_config_is_refused_before_allocating(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _refused(capsys, ["parity", "record", "--config", '{"dim": 1000000, "depth": 1000}', "--out", "A"],
             "parameters", "GiB")


ENV_CASES = [
    ("WORLD_SIZE", "two", ["parallel", "plan"]),
    ("RANK", "-1", ["parallel", "plan"]),
    ("PHYX_POLICY", "fastest", ["info"]),
    ("PHYX_DIST_TIMEOUT_S", "-5", ["parallel", "plan"]),
    ("PHYX_DIST_TIMEOUT_S", "soon", ["parallel", "plan"]),
    ("HCCL_BUFFSIZE", "abc", ["parallel", "plan"]),
    ("HCCL_BUFFSIZE", "0", ["parallel", "plan"]),
]


@pytest.mark.parametrize("name, value, argv", ENV_CASES, ids=[f"{n}={v}" for n, v, _ in ENV_CASES])
def test_bad_environment_values(monkeypatch, capsys, name, value, argv):
    monkeypatch.setenv(name, value)
    _refused(capsys, argv, name, repr(value))


def test_parity_usage_error_is_2_not_a_failed_verdict(capsys):
    # it used to raise SystemExit(message), which exits 1 like a failed verdict
    assert main(["parity", "compare", "A"]) == 2
    assert "phyx: error:" in capsys.readouterr().err


def test_stdout_onto_a_full_device():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHYX_", "HCCL_"))}
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "phyx.cli", "parallel", "plan", "--json"], stdout=full,
                           stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("phyx: error: cannot write to standard output"), r.stderr


def test_json_goes_to_stdout_alone(capsys):
    assert main(["parallel", "plan", "--layout", "1x2x1", "--json"]) == 0
    plans = json.loads(capsys.readouterr().out)
    assert (plans[0]["config"]["cfg"], plans[0]["config"]["sp"], plans[0]["config"]["tp"]) == (1, 2, 1)


def test_atomic_writes_replace_a_link_never_the_device(tmp_path):
    import stat

    from phyx.io.atomic import write_text_atomic

    link = tmp_path / "null.json"
    link.symlink_to(os.devnull)
    write_text_atomic(link, "{}")
    assert not link.is_symlink() and link.read_text() == "{}"
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_generate_json_prints_the_record_alone(monkeypatch, tmp_path, capsys):
    import importlib

    G = importlib.import_module("phyx.pipelines.generate")
    rec = {"settings": {"frames": 5, "height": 32, "width": 32}, "task": "t2v", "backend": {"name": "cpu"},
           "timings": {"total_s": 1.0}}
    monkeypatch.setattr(G, "generate", lambda a: {"out": tmp_path / "x.mp4", "record": rec,
                                                  "sidecar": tmp_path / "x.mp4.json"})
    assert main(["generate", "--json", "--out", str(tmp_path / "x.mp4")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == rec and "wrote" in err


def test_deprecated_spellings_still_work_with_a_note(tmp_path, capsys):
    import torch

    torch.save({"w": torch.ones(2)}, tmp_path / "m.pt")
    assert main(["convert", str(tmp_path / "m.pt"), str(tmp_path / "m.safetensors")]) == 0
    assert "phyx: note: the positional OUTPUT is deprecated" in capsys.readouterr().err
    assert (tmp_path / "m.safetensors").is_file()
    assert main(["convert", str(tmp_path / "m.pt"), "--out", str(tmp_path / "n.safetensors"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("cmd", [["bench", "ops", "--quick", "--sections", "peaks"],
                                 ["parity", "ops", "--backends", "cpu", "--dtypes", "fp32"]])
def test_existing_output_file_needs_overwrite(cmd, tmp_path, capsys):
    """An existing --out file is never replaced silently; the refusal comes before any work."""
    out = tmp_path / "result.json"
    out.write_text("keep me")
    assert main([*cmd, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("phyx: error:") and "--overwrite" in err[0]
    assert out.read_text() == "keep me"
