"""Property: whatever bytes or JSON structure phyx reads (parity manifests, model configs,
checkpoint indices, camera files), it either succeeds or raises its own error type
(phyx.errors.PhyxError); never KeyError, TypeError, AttributeError, RecursionError, a hang or a
memory blow-up."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phyx.errors import PhyxError
from phyx.io.checkpoint import open_checkpoint, save_safetensors_atomic
from phyx.tools.parity import artifact as A

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["fp32", "bf16", "module", "op", "fn", "method", "fn:os:system",
                                     "../../etc/passwd", "/dev/zero", "phyx-parity/1", "t", "out"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20)


def _within_phyx(fn, *args, **kw):
    """Call fn: success or a PhyxError are both fine; anything else fails the property."""
    try:
        return fn(*args, **kw)
    except PhyxError:
        return None


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory):
    from phyx.tools.parity.model import get_model_spec, record_run

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = record_run(get_model_spec("tiny-dit"), "cpu", "fp32")
    finally:
        torch.set_num_threads(n)
    return A.write(run, str(tmp_path_factory.mktemp("art") / "a"))


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _replace(obj, path, value):
    if not path:
        return value
    obj[path[0]] = _replace(obj[path[0]], path[1:], value)
    return obj


@SETTINGS
@given(data=st.data())
def test_mutated_manifests_read_and_compare_or_refuse(artifact_dir, data):
    from phyx.tools.parity.compare import compare_runs, format_compare

    base = json.load(open(os.path.join(artifact_dir, A.MANIFEST)))
    paths = [p for p in _paths(base) if "environment" not in p[:1]]
    edits = data.draw(st.lists(st.tuples(st.sampled_from(paths), json_values), min_size=1, max_size=3))
    m = json.loads(json.dumps(base))
    for path, value in edits:
        try:
            m = _replace(m, path, value)
        except (KeyError, IndexError, TypeError):    # an earlier edit removed that path
            pass
    with tempfile.TemporaryDirectory() as d:
        shutil.copy(os.path.join(artifact_dir, A.TENSORS), d)
        if isinstance(m, dict):
            m["manifest_sha256"] = hashlib.sha256(A._canonical(m)).hexdigest()
        with open(os.path.join(d, A.MANIFEST), "w") as f:
            json.dump(m, f)
        run = _within_phyx(A.read, d)
        if run is not None:   # a manifest that reads must also compare (or refuse) cleanly
            rep = _within_phyx(compare_runs, run, A.read(artifact_dir), allow_incomparable=True)
            if rep is not None:
                assert format_compare(rep).splitlines()[-1].startswith("VERDICT:")


@SETTINGS
@given(raw=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_manifest_bytes(raw):
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, A.MANIFEST), "wb") as f:
            f.write(raw)
        _within_phyx(A.read, d)


WAN_KEYS = ["variant", "patch_size", "text_len", "in_dim", "dim", "ffn_dim", "freq_dim", "text_dim",
            "out_dim", "num_heads", "num_layers", "qk_norm", "eps", "image_dim", "camera_channels",
            "rope_max_len", "_class_name", "num_attention_heads", "attention_head_dim", "in_channels",
            "out_channels", "added_kv_proj_dim", "qk_norm", "rope_max_seq_len", "pos_embed_seq_len"]
P2_KEYS = ["in_channels", "out_channels", "num_attention_heads", "attention_head_dim", "num_layers",
           "mlp_ratio", "text_embed_dim", "adaln_lora_dim", "max_size", "patch_size", "rope_scale",
           "extra_pos_embed_type", "concat_padding_mask", "qk_norm_eps"]
C3_KEYS = ["head_dim", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
           "num_hidden_layers", "latent_channel", "latent_patch_size", "patch_latent_dim", "rope_scaling",
           "rope_axes_dim", "hidden_act", "sound_gen", "sound_dim", "action_gen", "vocab_size"]
small = st.one_of(json_values, st.integers(-2, 64), st.lists(st.integers(-1, 4), max_size=4))


def _cfg(keys):
    return st.one_of(st.dictionaries(st.sampled_from(keys), small, max_size=8), json_values)


@SETTINGS
@given(wan=_cfg(WAN_KEYS), p2=_cfg(P2_KEYS), c3=_cfg(C3_KEYS))
def test_configs_from_any_json(wan, p2, c3):
    from phyx.models.cosmos3.config import Cosmos3Config
    from phyx.models.cosmos_predict2.config import Predict2Config
    from phyx.models.wan.config import WanConfig
    from phyx.models.wan.loading import config_from_diffusers

    _within_phyx(WanConfig.from_dict, wan)
    _within_phyx(config_from_diffusers, wan)
    _within_phyx(Predict2Config.from_dict, p2)
    _within_phyx(Cosmos3Config.from_dict, c3)


@SETTINGS
@given(cfg=st.one_of(_cfg(WAN_KEYS + C3_KEYS), st.binary(max_size=64).map(lambda b: b.decode("latin-1"))))
def test_model_dirs_with_any_config(cfg):
    import phyx.models

    with tempfile.TemporaryDirectory() as d:
        save_safetensors_atomic({"w": torch.ones(2)}, os.path.join(d, "model.safetensors"))
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write(cfg if isinstance(cfg, str) else json.dumps(cfg))
        _within_phyx(phyx.models.load, d)


@SETTINGS
@given(index=st.one_of(
    json_values,
    st.dictionaries(st.just("weight_map"), st.one_of(
        json_values, st.dictionaries(st.sampled_from(["w", "v"]), st.one_of(scalars, st.sampled_from(
            ["a.safetensors", "b.safetensors", "sub/../a.safetensors", "link.safetensors", "."])))))))
def test_checkpoint_indices(index):
    with tempfile.TemporaryDirectory() as d:
        save_safetensors_atomic({"w": torch.ones(2)}, os.path.join(d, "a.safetensors"))
        os.symlink("/etc/hostname", os.path.join(d, "link.safetensors"))
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f)
        r = _within_phyx(open_checkpoint, d)
        if r is not None:
            for k in r.keys():
                _within_phyx(r.get, k)


def _npy(arr) -> bytes:
    b = io.BytesIO()
    np.save(b, arr)
    return b.getvalue()


arrays = st.one_of(
    st.tuples(st.sampled_from(["f4", "f8", "i2", "u1", "c8", "?", "U3", "S2"]),
              st.lists(st.integers(0, 5), min_size=0, max_size=3)).map(
        lambda t: _npy(np.ones(t[1], dtype=t[0]))),
    st.binary(max_size=120),
    st.builds(lambda shape, tail: _npy(np.zeros(2, "f4")).replace(b"(2,)", shape.encode())[:200] + tail,
              st.sampled_from(["(99999999999, 4)", "(1, 4)", "(-1,)", "()", "[1]", "(2,"]),
              st.binary(max_size=16)))


@SETTINGS
@given(k=arrays, p=arrays)
def test_camera_files(k, p):
    from phyx.models.wan import camera as cam

    with tempfile.TemporaryDirectory() as d:
        for name, data in (("intrinsics.npy", k), ("poses.npy", p)):
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        out = _within_phyx(cam.load_camera_dir, d)
        if out is not None:
            _within_phyx(cam.prepare_camera, out[0], out[1], 16, 16, frame_num=5)
