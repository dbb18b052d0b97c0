"""The stages of generate() one by one, without the models: resolve keeps one Settings, validate
refuses before model work, the family contract has its defaults, denoise drives any Denoiser,
media writing checks ffmpeg, and the CLI parser is GenerateArgs."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os

import numpy as np
import pytest
import torch

from phyx.pipelines import media
from phyx.pipelines.inputs import InputError
from phyx.pipelines.protocol import Denoiser, PipelineFamily

G = importlib.import_module("phyx.pipelines.generate")  # the package exports generate() under that name


def _request(**kw):
    kw.setdefault("write", False)
    return G.resolve(G.GenerateArgs(**kw))


def test_resolve_keeps_given_values_and_one_settings():
    req = _request(model="tiny-wan", height=0, frames=9)
    assert (req.settings.height, req.settings.frames) == (0, 9)  # 0 stays 0 for validate to refuse
    assert req.settings.width == req.spec.width and req.task == "t2v"
    assert isinstance(req.family, PipelineFamily) and req.family.PATCH == (1, 2, 2)
    assert _request(model="tiny-cosmos-predict2").settings.frames == 1
    assert _request(dtype="bfloat16").dtype == "bf16"


def test_validate_fills_the_request_without_model_work(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    req = G.validate_request(_request(model="tiny-lingbot", frames=9, write=True,
                                      out=str(tmp_path / "o" / "x.mp4")))
    assert req.world == 1 and req.out == tmp_path / "o" / "x.mp4" and req.camera is not None
    assert any("synthetic" in n for n in req.notes)
    assert not (tmp_path / "o").exists()  # checked, not created


def test_validate_refuses_repeated_unipc_timesteps():
    with pytest.raises(InputError, match="--steps 200 or fewer"):
        G.validate_request(_request(steps=250))
    G.check_steps("euler", 250, 5.0)  # the Euler schedule takes it


def test_overwrite_replaces_only_a_phyx_output(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out = tmp_path / "x.mp4"
    out.write_bytes(b"old")
    (tmp_path / "x.mp4.json").write_text(json.dumps({"model": "tiny-wan", "settings": {}, "output": {}}))
    with pytest.raises(InputError, match="already exists"):
        G.validate_request(_request(out=str(out), write=True))
    assert G.validate_request(_request(out=str(out), write=True, overwrite=True)).out == out
    (tmp_path / "x.mp4.json").write_text("{}")  # not a phyx sidecar
    with pytest.raises(InputError, match="not written by phyx"):
        G.validate_request(_request(out=str(out), write=True, overwrite=True))


def test_family_contract_defaults(tmp_path):
    from phyx.pipelines.families import family

    assert family("wan").checkpoint_shift(tmp_path) is None
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"flow_shift": 2.5}))
    assert family("cosmos3").checkpoint_shift(tmp_path) == 2.5
    for name in ("wan", "cosmos-predict2", "cosmos3"):
        assert issubclass(family(name).denoiser, Denoiser)

    class Minimal(Denoiser):
        init_latents = predict = final = describe = None

        def step(self, pred, i, x):
            return x

    assert Minimal().extra_outputs() == {}


def test_generate_is_a_short_orchestrator_without_probing():
    src = inspect.getsource(G.generate)
    assert len(src.splitlines()) < 40
    assert "hasattr(" not in inspect.getsource(G)


class _Counting(Denoiser):
    def __init__(self):
        self.calls = []

    def init_latents(self, noise):
        return noise

    def predict(self, x, i):
        self.calls.append(i)
        return -x

    def step(self, pred, i, x):
        return x + 0.5 * pred

    def final(self, x):
        return x * 2

    def describe(self):
        return {"kind": "counting"}


def test_denoise_stage_drives_any_denoiser(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    req = G.validate_request(_request(steps=3, progress=False))
    ctx = G.select_backend(req)
    ctx.latent_shape = (1, 2, 1, 2, 2)
    den = _Counting()
    lat = G.denoise(ctx, den)
    from phyx.pipelines.noise import cpu_noise

    torch.testing.assert_close(lat, cpu_noise(ctx.latent_shape, 0) * 2 * 0.5 ** 3)
    assert den.calls == [0, 1, 2] and len(ctx.step_s) == 3 and "denoise_s" in ctx.timer.seconds
    # the Denoisers read sampling values through the context's one Settings
    ctx.settings = dataclasses.replace(ctx.settings, shift=1.5)
    assert ctx.shift == 1.5 and ctx.steps == 3 and ctx.frames == req.settings.frames


def test_parser_is_built_from_generate_args():
    from phyx.cli import build_parser

    args = build_parser().parse_args(["generate"])
    for f in dataclasses.fields(G.GenerateArgs):
        if f.metadata.get("cli", True):
            assert getattr(args, f.name) == f.default, f.name
    args = build_parser().parse_args(["generate", "--no-progress", "--dtype", "bfloat16", "--vae-halo", "3"])
    assert (args.progress, args.dtype, args.vae_halo) == (False, "bf16", 3)


# ---- media ---------------------------------------------------------------------------------------

def test_failed_encode_is_never_published(tmp_path):
    out = tmp_path / "odd.mp4"
    frames = np.zeros((2, 5, 5, 3), np.uint8)  # yuv420p needs even sizes: ffmpeg exits non-zero
    with pytest.raises(media.MediaError, match="ffmpeg failed"):
        media.write_video(frames, out, 8.0)
    assert list(tmp_path.iterdir()) == []


def test_video_round_trip_and_device_refusal(tmp_path):
    frames = (np.arange(2 * 16 * 16 * 3) % 251).astype(np.uint8).reshape(2, 16, 16, 3)
    out = media.write_video(frames, tmp_path / "v.mp4", 8.0)
    assert media.read_video(out).shape == (2, 16, 16, 3)
    link = tmp_path / "dev.mp4"
    link.symlink_to(os.devnull)
    with pytest.raises(media.MediaError, match="not a regular file"):
        media.write_video(frames, link, 8.0)
    assert link.is_symlink()
