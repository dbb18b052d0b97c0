"""Issue 17 (data side): nothing read from disk is trusted. Artifacts, configs, checkpoint
indices, camera files and benchmark JSON are data: never imported or called, paths confined to
their directory, sizes and depths capped, every refusal one line of phyx's own error types."""
from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np
import pytest
import torch

from phyx.cli import main
from phyx.errors import CheckpointError, ConfigError, InputError, OutputError, PhyxError
from phyx.io import untrusted as U
from phyx.io.atomic import write_text_atomic
from phyx.io.checkpoint import load_state, open_checkpoint, save_safetensors_atomic
from phyx.tools.parity import artifact as A
from phyx.tools.parity import metrics as M
from phyx.tools.parity.compare import compare_runs, format_compare, replay
from phyx.tools.parity.model import get_model_spec, record_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_a():
    torch.set_num_threads(1)
    return record_run(get_model_spec("tiny-dit"), "cpu", "fp32")


def _reseal(path, edit) -> None:
    """Edit an artifact's manifest and recompute its checksum, as an attacker would."""
    mpath = os.path.join(path, A.MANIFEST)
    m = json.load(open(mpath))
    edit(m)
    m["manifest_sha256"] = hashlib.sha256(A._canonical(m)).hexdigest()
    open(mpath, "w").write(json.dumps(m))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("phyx: error:") and "\n" not in err and "Traceback" not in err, err
    return err


# --- code execution from an artifact ------------------------------------------------------------
@pytest.mark.parametrize("config", [["touch", "MARK"], {}])
def test_live_never_imports_what_an_artifact_names(run_a, tmp_path, capsys, config):
    marker = tmp_path / "pwned"
    p = A.write(run_a, str(tmp_path / "evil"))
    cfg = [str(marker) if c == "MARK" else c for c in config] if isinstance(config, list) else config
    _reseal(p, lambda m: m["run"].update(model="subprocess:call", config=cfg))
    assert main(["parity", "compare", p, "--live"]) == 2
    err = _one_line_error(capsys)
    assert "run.config is not an object" in err if isinstance(config, list) else "not a registered" in err
    assert not marker.exists()


def test_replay_calls_only_declared_probes(run_a, tmp_path):
    marker = tmp_path / "pwned"
    spec = get_model_spec("tiny-dit")
    src = A.RunData(json.loads(json.dumps(run_a.manifest)), dict(run_a.tensors))
    cmd = {"args": {"seq": [{"v": f"touch {marker}"}], "tuple": True}, "kwargs": {"map": {}}}
    src.manifest["layers"] = [
        {"idx": 0, "name": "evil_fn", "target": "fn:os:system", "kind": "fn", "inputs": cmd,
         "outputs": ["out"], "shapes": {}, "stats": {}},
        {"idx": 1, "name": "evil_method", "target": ":apply", "kind": "method", "inputs": cmd,
         "outputs": ["out"], "shapes": {}, "stats": {}},
        {"idx": 2, "name": "evil_op", "target": "op:__class__", "kind": "op", "inputs": cmd,
         "outputs": ["out"], "shapes": {}, "stats": {}},
        {"idx": 3, "name": "evil_dtype", "target": "blocks.0", "kind": "module",
         "inputs": {"args": {"seq": [{"dtype": "save"}], "tuple": True}, "kwargs": {"map": {}}},
         "outputs": ["out"], "shapes": {}, "stats": {}}]
    outs, errors = replay(spec.build(), src, torch.device("cpu"), probes=spec)
    assert not outs and set(errors) == {"evil_fn", "evil_method", "evil_op", "evil_dtype"}
    assert "not a probe this model declares" in errors["evil_fn"]
    assert "not a torch dtype" in errors["evil_dtype"]
    assert not marker.exists()


def test_replay_from_another_model_is_one_line(run_a, tmp_path):
    p = A.write(run_a, str(tmp_path / "a"))
    with pytest.raises(A.NotComparableError, match="run.seed"):
        record_run(get_model_spec("tiny-dit", seed=3), "cpu", "fp32", replay_from=A.read(p))


# --- manifests ----------------------------------------------------------------------------------
@pytest.mark.parametrize("edit,msg", [
    (lambda m: m.pop("files"), "'files'"),
    (lambda m: m["run"].update(seed="0"), "run.seed"),
    (lambda m: m["layers"].append(7), r"layers\[\d+\] is not an object"),
    (lambda m: m["layers"][0].update(kind="exec"), "kind"),
    (lambda m: m["files"].update({"../../etc/passwd": {}}), "names"),
    (lambda m: m["layers"][0]["stats"].update(out={"sample": ["x"], "l2": 1}), "sample"),
])
def test_bad_manifests_are_one_line(run_a, tmp_path, edit, msg):
    p = A.write(run_a, str(tmp_path / "a"))
    _reseal(p, edit)
    with pytest.raises(A.ArtifactError, match=msg):
        A.read(p)


def test_manifest_top_level_depth_and_kind(tmp_path):
    d = tmp_path / "art"
    d.mkdir()
    for text, msg in [("[1, 2]", "top level is an array"), ("[" * 5000 + "]" * 5000, "nested deeper"),
                      ('{"format": "phyx-parity/1", "x": ' + "[" * 100 + "]" * 100 + "}", "nested deeper")]:
        (d / A.MANIFEST).write_text(text)
        with pytest.raises(A.ArtifactError, match=msg):
            A.read(str(d))
    (d / A.MANIFEST).unlink()
    os.mkfifo(d / A.MANIFEST)
    t = time.monotonic()
    with pytest.raises(A.ArtifactError, match="FIFO"):
        A.read(str(d))
    assert time.monotonic() - t < 5
    (d / A.MANIFEST).unlink()
    os.symlink("/dev/zero", d / A.MANIFEST)
    with pytest.raises(A.ArtifactError, match="outside"):
        A.read(str(d))


# --- the verdict --------------------------------------------------------------------------------
def _copy(run):
    return A.RunData(json.loads(json.dumps(run.manifest)), dict(run.tensors))


def test_end_to_end_output_is_part_of_the_verdict(run_a):
    b = _copy(run_a)
    assert compare_runs(run_a, b).verdict == M.PASS
    b.tensors["outputs/out"] = run_a.tensors["outputs/out"] * 8.4e5
    rep = compare_runs(run_a, b)
    assert all(r.status == M.PASS for r in rep.rows)       # every captured layer matches
    assert rep.verdict == M.FAIL and rep.outputs["out"]["status"] == M.FAIL
    assert "end-to-end output 'out'" in format_compare(rep).splitlines()[-1]
    del b.tensors["outputs/out"]
    assert "missing in B" in "; ".join(compare_runs(run_a, b).reasons)


def test_layer_dropped_on_one_side_is_not_a_pass(run_a):
    b = _copy(run_a)
    L = b.layers[0]
    for k in L["outputs"]:
        b.tensors.pop(f"L/{L['name']}/{k}", None)
        L["stats"].pop(k, None)
    rep = compare_runs(run_a, b)
    assert rep.verdict == M.FAIL and "one side only" in "; ".join(rep.reasons)


def test_nothing_compared_is_not_a_pass(run_a, tmp_path, capsys):
    empty = _copy(run_a)
    empty.manifest.update(layers=[], outputs={})
    empty.tensors = {k: v for k, v in run_a.tensors.items() if k.startswith("inputs/")}
    rep = compare_runs(empty, _copy(empty))
    assert rep.verdict == M.FAIL and "nothing was compared" in rep.reasons[-1]
    pa, pb = A.write(empty, str(tmp_path / "a")), A.write(_copy(empty), str(tmp_path / "b"))
    assert main(["parity", "compare", pa, pb]) == 1
    assert "nothing was compared" in capsys.readouterr().out.splitlines()[-1]


def test_unreplayed_layers_fail_and_are_printed(run_a):
    b = record_run(get_model_spec("tiny-dit"), "cpu", "fp32", replay_from=run_a)
    assert compare_runs(run_a, b).verdict == M.PASS
    first = run_a.layers[0]["name"]
    b.tensors = {k: v for k, v in b.tensors.items() if not k.startswith(f"R/{first}/")}
    b.manifest["replay_errors"] = {first: "RuntimeError: planted"}
    rep = compare_runs(run_a, b)
    text = format_compare(rep)
    assert rep.verdict == M.FAIL and "not replayed" in text.splitlines()[-1]
    assert f"REPLAY ERROR {first}: RuntimeError: planted" in text


def test_loss_parity_refuses_zero_or_negative_steps():
    from phyx.tools.parity.loss import run_spec_loss_parity, window_errors

    spec = get_model_spec("tiny-wan-t2v")
    for steps in (0, -3):
        with pytest.raises(InputError, match="steps must be a whole number >= 1"):
            run_spec_loss_parity(spec, ["cpu", "cpu"], steps=steps)
    with pytest.raises(InputError, match="no steps"):
        window_errors([], [])


# --- output that destroys -----------------------------------------------------------------------
def test_atomic_writers_never_replace_a_device_or_fifo(tmp_path):
    with pytest.raises(OutputError, match="character device"):
        write_text_atomic("/dev/null", "x")
    assert U.file_kind("/dev/null") == "character device"
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(OutputError, match="FIFO"):
        write_text_atomic(tmp_path / "pipe", "x")
    assert U.file_kind(tmp_path / "pipe").startswith("FIFO")
    write_text_atomic(tmp_path / "ok.txt", "x")
    assert (tmp_path / "ok.txt").read_text() == "x"


def test_overwrite_replaces_only_an_artifact(run_a, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(A.ArtifactError, match="without a readable manifest.json"):
        A.write(run_a, str(home), overwrite=True)
    (home / A.MANIFEST).write_text(json.dumps({"format": A.FORMAT}))
    with pytest.raises(A.ArtifactError, match="did not write .thesis.tex"):
        A.write(run_a, str(home), overwrite=True)
    assert (home / "thesis.tex").read_text() == "years of work"
    (tmp_path / "file").write_text("keep")
    with pytest.raises(A.ArtifactError, match="regular file"):
        A.write(run_a, str(tmp_path / "file"), overwrite=True)
    p = A.write(run_a, str(tmp_path / "art"))
    assert A.write(run_a, p, overwrite=True) == p and A.read(p).manifest["format"] == A.FORMAT


# --- checkpoints --------------------------------------------------------------------------------
def _index_dir(tmp_path, weight_map, name="model.safetensors.index.json"):
    d = tmp_path / "ck"
    d.mkdir(exist_ok=True)
    save_safetensors_atomic({"w": torch.ones(2)}, d / "a.safetensors")
    (d / name).write_text(json.dumps({"weight_map": weight_map}))
    return d


@pytest.mark.parametrize("shard,msg", [("../../../../etc/passwd", "leaves the directory"),
                                       ("/dev/zero", "leaves the directory"),
                                       ("link.safetensors", "outside")])
def test_index_shards_stay_inside_the_directory(tmp_path, shard, msg):
    d = _index_dir(tmp_path, {"w": shard})
    outside = tmp_path / "outside.safetensors"
    save_safetensors_atomic({"w": torch.ones(2)}, outside)
    os.symlink(outside, d / "link.safetensors")
    with pytest.raises(CheckpointError, match=msg) as e:
        open_checkpoint(d)
    assert shard in str(e.value)


@pytest.mark.parametrize("weight_map,msg", [(["a.safetensors"], "not an object"),
                                            ({"w": 3}, "not a shard file name")])
def test_index_weight_map_types(tmp_path, weight_map, msg):
    with pytest.raises(CheckpointError, match=msg):
        open_checkpoint(_index_dir(tmp_path, weight_map))


def test_hub_cache_blobs_are_inside(tmp_path):
    repo = tmp_path / "models--org--m"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc"
    snap.mkdir(parents=True)
    save_safetensors_atomic({"w": torch.ones(2)}, repo / "blobs" / "1234")
    os.symlink("../../blobs/1234", snap / "model.safetensors")
    assert open_checkpoint(snap).keys() == ["w"]


def test_integer_and_bool_weights_for_float_parameters(tmp_path):
    for dt in (torch.int64, torch.bool):
        save_safetensors_atomic({"weight": torch.ones(3, 2, dtype=dt), "bias": torch.ones(3)},
                                tmp_path / "m.safetensors")
        with pytest.raises(CheckpointError, match="floating-point"):
            load_state(torch.nn.Linear(2, 3), open_checkpoint(tmp_path / "m.safetensors"))


# --- configs ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    from phyx.models.wan.loading import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("wan") / "ck")


@pytest.mark.parametrize("edit,err,msg", [
    (lambda c: [c], PhyxError, "array"),
    (lambda c: {**c, "num_heads": 0}, ConfigError, r"num_heads = 0 is out of range"),
    (lambda c: {**c, "num_heads": "4"}, ConfigError, "num_heads = '4'"),
    (lambda c: {**c, "num_layers": 1e8}, ConfigError, "num_layers = 100000000.0"),
    (lambda c: {**c, "num_layers": 16_000_000}, ConfigError, "PHYX_MAX_MODEL_BYTES"),
    (lambda c: {**c, "num_layers": 1000}, CheckpointError, "does not match the weights"),
])
def test_bad_model_configs_are_one_line(wan_dir, tmp_path, edit, err, msg):
    import shutil

    import phyx.models

    d = tmp_path / "ck"
    shutil.copytree(wan_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(edit(cfg)))
    t = time.monotonic()
    with pytest.raises(err, match=msg):
        phyx.models.load(d, family="wan")
    assert time.monotonic() - t < 10


def test_live_config_from_an_artifact_is_checked(run_a, tmp_path, capsys):
    from phyx.tools.parity.model import live_spec

    src = A.RunData({**run_a.manifest, "run": {**run_a.manifest["run"], "model": "tiny-wan-t2v",
                                                "config": {"num_layers": 1 << 24}}}, {}, "x")
    with pytest.raises(ConfigError, match="PHYX_MAX_MODEL_BYTES"):
        live_spec(src)
    src.manifest["run"]["config"] = {"no_such_field": 1}
    with pytest.raises(ConfigError, match="unknown field"):
        live_spec(src)


def test_config_from_dict_caps_memory():
    from phyx.models.cosmos3.config import Cosmos3Config
    from phyx.models.cosmos_predict2.config import Predict2Config

    with pytest.raises(ConfigError, match="GiB"):
        Predict2Config.from_dict({"num_layers": 1 << 20, "num_attention_heads": 64})
    with pytest.raises(ConfigError, match="mrope_section"):
        Cosmos3Config.from_dict({"rope_scaling": {"mrope_section": 7}})
    with pytest.raises(ConfigError, match="hidden_act"):
        Cosmos3Config.from_dict({"hidden_act": ["silu"]})


# --- camera files -------------------------------------------------------------------------------
def test_camera_files_typed_and_regular(tmp_path):
    from phyx.models.wan import camera as cam

    P = np.stack([np.eye(4)] * 5)
    for name, K, msg in [("str", np.array([["500", "500", "4", "2"]]), "string"),
                         ("cplx", np.array([[500 + 1j, 500, 4, 2]]), "complex")]:
        d = tmp_path / name
        d.mkdir()
        np.save(d / "intrinsics.npy", K)
        np.save(d / "poses.npy", P)
        with pytest.raises(cam.CameraInputError, match=msg):
            cam.load_camera_dir(d)
        with pytest.raises(cam.CameraInputError, match=msg):
            cam.prepare_camera(K, P, 64, 64)
    d = tmp_path / "fifo"
    d.mkdir()
    np.save(d / "poses.npy", P)
    os.mkfifo(d / "intrinsics.npy")
    with pytest.raises(cam.CameraInputError, match="FIFO"):
        cam.load_camera_dir(d)


# --- convert ------------------------------------------------------------------------------------
def test_convert_reads_legacy_torch_files_and_refuses_bad_outputs(tmp_path, capsys):
    from phyx.io.convert import convert, is_zip_checkpoint

    src = tmp_path / "legacy.pt"
    torch.save({"model": {"w": torch.arange(6.0).view(2, 3)}}, src, _use_new_zipfile_serialization=False)
    assert not is_zip_checkpoint(src)
    out = convert(src, tmp_path / "legacy.safetensors")
    assert out["tensors"] == 1
    assert torch.equal(open_checkpoint(tmp_path / "legacy.safetensors").get("w"),
                       torch.arange(6.0).view(2, 3))
    with pytest.raises(CheckpointError, match="exists; pass --overwrite"):
        convert(src, tmp_path / "legacy.safetensors")
    (tmp_path / "outdir").mkdir()
    assert main(["convert", str(src), str(tmp_path / "outdir")]) == 2
    assert "is a directory" in _one_line_error(capsys)


# --- port scan ----------------------------------------------------------------------------------
def test_port_scan_skips_what_it_must_not_read(tmp_path, monkeypatch):
    from phyx.tools.porting import scanner

    os.mkfifo(tmp_path / "fifo.py")
    os.symlink("/dev/zero", tmp_path / "zero.py")
    (tmp_path / "big.py").write_text("x = 1\n" * 40_000)
    (tmp_path / "deep.py").write_text("x = " + "+".join(["1"] * 50_000) + "\nimport torch\ntorch.cuda.synchronize()\n")
    monkeypatch.setattr(scanner, "SCAN_MAX_BYTES", 200_000)
    t = time.monotonic()
    rep = scanner.scan_paths([str(tmp_path)])
    assert time.monotonic() - t < 30
    skipped = "\n".join(rep.skipped)
    assert "fifo.py: FIFO" in skipped and "zero.py: character device" in skipped
    assert "big.py" in skipped and "cap" in skipped
    assert any(p.endswith("deep.py") for p in rep.regex_fallback)          # RecursionError caught
    assert any(f.path.endswith("deep.py") and f.category == "cuda-api" for f in rep.findings)
