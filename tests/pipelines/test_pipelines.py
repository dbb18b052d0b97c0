"""Pipeline pieces without a DiT: noise, samplers, text encoding, media writing, validation,
tiny checkpoints."""
from __future__ import annotations

import json
import wave

import numpy as np
import pytest
import torch

from phyx.errors import CheckpointError, ParallelConfigError
from phyx.pipelines import media, noise, schedulers, sidecar, text, tiny, validate
from phyx.pipelines.inputs import InputError, load_camera, synthetic_camera


def test_cpu_noise_is_seeded_and_device_independent():
    a = noise.cpu_noise((1, 4, 2, 3, 3), seed=7)
    b = noise.cpu_noise((1, 4, 2, 3, 3), seed=7, device="cpu", dtype=torch.float32)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, noise.cpu_noise((1, 4, 2, 3, 3), seed=8))
    g = torch.Generator().manual_seed(7)
    torch.testing.assert_close(a, torch.randn(1, 4, 2, 3, 3, generator=g), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["unipc", "euler"])
def test_flow_samplers_from_diffusers(kind):
    s = schedulers.make_sampler(kind, 5, shift=5.0)
    ts = s.timesteps.double()
    assert len(ts) == 5 and bool((ts[1:] < ts[:-1]).all()) and float(ts[0]) > 900
    x = torch.randn(1, 4, 2, 2, 2)
    out = s.step(torch.zeros_like(x), 0, x)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_cosmos_rf_sampler_schedule_and_exact_step():
    s = schedulers.make_sampler("cosmos-rf", 6)
    assert abs(s.sigma(0) - 80.0) < 1e-9 and abs(float(s.sigmas[-2]) - 0.002) < 1e-12
    assert float(s.sigmas[-1]) == float(s.sigmas[-2])          # final sigma is sigma_min, not 0
    x0, eps = torch.randn(1, 4, 1, 2, 2), torch.randn(1, 4, 1, 2, 2)
    x = x0 + s.sigma(2) * eps
    torch.testing.assert_close(s.step_x0(x0, 2, x), x0 + s.sigma(3) * eps, rtol=1e-5, atol=1e-5)
    # the velocity form agrees with the x0 form: x0 = (1 - t) x - t v
    t = float(s.t[2])
    v = ((1 - t) * x - x0) / t
    torch.testing.assert_close(s.step(v, 2, x), s.step_x0(x0, 2, x), rtol=1e-5, atol=1e-5)


def test_unknown_sampler_and_bad_shift():
    with pytest.raises(ValueError, match="unknown sampler"):
        schedulers.make_sampler("ddim", 4)
    with pytest.raises(ValueError, match="shift"):
        schedulers.make_sampler("unipc", 4, shift=0.0)


def test_byte_tokenizer_and_zero_padded_embeddings():
    tok = text.ByteTokenizer()
    ids, mask = tok(["ab", "héllo"], 8)
    assert ids[0, :3].tolist() == [ord("a") + 3, ord("b") + 3, tok.eos_token_id]
    assert mask.sum(1).tolist() == [3, 7]
    enc = text.tiny_text_encoder("umt5", 16)
    emb, lens = text.encode(enc, tok, ["ab", "héllo"], 8)
    assert emb.shape == (2, 8, 16) and lens.tolist() == [3, 7]
    assert emb[0, 3:].abs().sum() == 0 and emb[0, :3].abs().sum() > 0


def test_validation_messages():
    with pytest.raises(InputError, match=r"not 4n\+1.*use 9 or 13"):
        validate.check_frames(10, 4, "t2v")
    validate.check_frames(17, 4, "t2v")
    with pytest.raises(InputError, match="one frame"):
        validate.check_frames(5, 4, "t2i")
    with pytest.raises(InputError, match=r"multiple of the VAE stride \(16\).*32x32.*width 48 -> 64"):
        validate.check_size(64, 48, 16, (1, 2, 2))
    validate.check_size(64, 96, 16, (1, 2, 2))
    with pytest.raises(ParallelConfigError, match="world size 1 is not cfg x sp x tp"):
        validate.check_world(2, 1, 1)
    with pytest.raises(InputError, match="must end in"):
        validate.check_output("x.gif", "t2v")
    with pytest.raises(InputError, match="needs a conditioning image"):
        validate.check_image_input("i2v", None, allow_default=False)


def test_missing_checkpoint_parts_listed(tmp_path):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError) as e:
        validate.check_checkpoint([(tmp_path / "vae", "the VAE"), (tmp_path / "transformer", "the DiT"),
                                   (tmp_path / "text_encoder", "the text encoder")])
    msg = str(e.value)
    assert "transformer" in msg and "text_encoder" in msg and "the VAE" not in msg


def test_camera_files_of_wrong_shape(tmp_path):
    K, P = synthetic_camera(9)
    np.save(tmp_path / "intrinsics.npy", K)
    np.save(tmp_path / "poses.npy", P)
    k2, p2 = load_camera(tmp_path)
    assert k2.shape == (9, 4) and p2.shape == (9, 4, 4)
    np.save(tmp_path / "poses.npy", P[:, :3])            # [N, 3, 4]
    with pytest.raises(InputError, match=r"\[N, 4, 4\]"):
        load_camera(tmp_path)
    np.save(tmp_path / "poses.npy", P[:5])
    with pytest.raises(InputError, match="same frames"):
        load_camera(tmp_path)
    with pytest.raises(InputError, match="not a directory"):
        load_camera(tmp_path / "nope")


def test_media_writes_atomically(tmp_path):
    video = torch.linspace(-1, 1, 3 * 5 * 16 * 16).view(3, 5, 16, 16)
    frames = media.to_uint8_frames(video)
    assert frames.shape == (5, 16, 16, 3) and frames.dtype == np.uint8
    out = media.write_video(frames, tmp_path / "v.mp4", fps=8)
    assert media.read_video(out).shape == (5, 16, 16, 3)
    media.write_image(frames[0], tmp_path / "i.png")
    np.testing.assert_array_equal(media.read_video(tmp_path / "i.png")[0], frames[0])  # png is lossless
    wav = media.write_wav(torch.sin(torch.arange(800) / 5.0).repeat(2, 1), tmp_path / "a.wav", 8000)
    with wave.open(str(wav)) as f:
        assert (f.getnchannels(), f.getframerate(), f.getnframes(), f.getsampwidth()) == (2, 8000, 800, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "i.png", "v.mp4"]  # no temp files left


def test_sidecar_roundtrip(tmp_path):
    p = sidecar.write_sidecar(tmp_path / "v.mp4", {"a": 1, "t": torch.float32})
    assert p.name == "v.mp4.json" and json.loads(p.read_text())["a"] == 1


def test_tiny_checkpoint_built_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYX_CACHE_DIR", str(tmp_path))
    a = tiny.ensure("wan-t2v")
    stamp = (a / "vae" / "config.json").stat().st_mtime_ns
    b = tiny.ensure("wan-t2v")
    assert a == b and (b / "vae" / "config.json").stat().st_mtime_ns == stamp
    assert {p.name for p in a.iterdir()} >= {"transformer", "vae", "text_encoder", "tokenizer", tiny.MARKER}
    assert [p.name for p in a.parent.iterdir()] == [a.name]  # no temporary directory left behind
