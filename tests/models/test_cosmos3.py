"""Cosmos3 omni on phyx vs diffusers' Cosmos3OmniTransformer (the oracle), fp32 on the CPU:
video-only, video+sound and video+sound+action steps; the mRoPE ids and tables; the cached
understanding-tower K/V; loading layouts."""
from __future__ import annotations

import pytest
import torch

from phyx.errors import CheckpointError, LayoutError
from phyx.io.checkpoint import open_checkpoint, save_safetensors_atomic
from phyx.models import cosmos3 as c3
from phyx.ops import rope_tables
from phyx.testing import rel_l2

diffusers = pytest.importorskip("diffusers")
from diffusers.models.transformers.transformer_cosmos3 import Cosmos3OmniTransformer, Cosmos3VLTextRotaryEmbedding  # noqa: E402

TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _no_grad():
    torch.set_grad_enabled(False)
    yield
    torch.set_grad_enabled(True)


def _diffusers_model(seed=1, **over):
    d = c3.tiny_config(**over).to_diffusers_dict()
    d.pop("_class_name")
    m = Cosmos3OmniTransformer(**d).eval()
    from phyx.models.common.init import init_seeded_
    init_seeded_(m, seed)
    return m


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    ref = _diffusers_model()
    path = tmp_path_factory.mktemp("cosmos3")
    ref.save_pretrained(path)
    return ref, path


def _sample(seed=0, U=5, T=3, H=4, W=5, Ts=6, Ta=2):
    g = torch.Generator().manual_seed(seed)
    return dict(ids=torch.randint(0, 64, (U,), generator=g), vision=torch.randn(4, T, H, W, generator=g),
                sound=torch.randn(6, Ts, generator=g), action=torch.randn(Ta, 5, generator=g))


def _diffusers_call(ref, cfg, s, noisy, t, *, sound=False, action=False, fps=24.0):
    U = s["ids"].shape[0]
    C, T, H, W = s["vision"].shape
    h, w = -(-H // 2), -(-W // 2)
    Nv = T * h * w
    Ts = s["sound"].shape[1] if sound else 0
    Ta = s["action"].shape[0] if action else 0
    layout = c3.SequenceLayout(U, (T, h, w), Ts, Ta)
    pos = c3.position_ids(cfg, layout, fps).float()
    noisy = torch.tensor(noisy)
    mse = (U + noisy[:, None] * h * w + torch.arange(h * w)).reshape(-1)
    kw = dict(input_ids=s["ids"], text_indexes=torch.arange(U), position_ids=pos, und_len=U,
              sequence_length=layout.total, vision_tokens=[s["vision"][None]], vision_token_shapes=[(T, h, w)],
              vision_sequence_indexes=torch.arange(U, U + Nv), vision_mse_loss_indexes=mse,
              vision_timesteps=torch.full((mse.numel(),), t), vision_noisy_frame_indexes=[noisy],
              return_dict=False)
    if sound:
        si = torch.arange(U + Nv, U + Nv + Ts)
        kw.update(sound_tokens=[s["sound"]], sound_token_shapes=[(Ts, 1, 1)], sound_sequence_indexes=si,
                  sound_mse_loss_indexes=si, sound_timesteps=torch.full((Ts,), t),
                  sound_noisy_frame_indexes=[torch.arange(Ts)])
    if action:
        ai = torch.arange(U + Nv + Ts, U + Nv + Ts + Ta)
        an = torch.tensor([1])
        kw.update(action_tokens=[s["action"]], action_token_shapes=[(Ta, 1, 1)], action_sequence_indexes=ai,
                  action_mse_loss_indexes=ai[an], action_timesteps=torch.full((1,), t),
                  action_noisy_frame_indexes=[an], action_domain_ids=[torch.tensor([2])])
    return ref(**kw)


def test_video_only_matches_diffusers(saved):
    ref, path = saved
    ours = c3.load(path)
    s = _sample()
    want = _diffusers_call(ref, ours.config, s, [1, 2], 700.0)[0][0]
    got = ours(s["ids"], s["vision"], 700.0, vision_noisy_frames=[1, 2])["vision"]
    assert got.shape == want.shape == (1, 4, 3, 4, 5)
    assert rel_l2(got, want) < TOL
    assert torch.count_nonzero(got[:, :, 0]) == 0          # conditioning frame: no prediction


def test_video_and_sound_and_action_match_diffusers(saved):
    ref, path = saved
    ours = c3.load(path)
    s = _sample(seed=1)
    v, snd, act = _diffusers_call(ref, ours.config, s, [0, 1, 2], 350.0, sound=True, action=True, fps=16.0)
    got = ours(s["ids"], s["vision"], 350.0, sound=s["sound"], sound_timesteps=350.0, action=s["action"],
               action_domain=2, action_noisy_frames=[1], action_timesteps=350.0, fps=16.0)
    assert rel_l2(got["vision"], v[0]) < TOL
    assert rel_l2(got["sound"], snd[0]) < TOL
    assert rel_l2(got["action"], act[0]) < TOL
    # video+sound without action is a different sequence; it must match too
    v2, snd2, _ = _diffusers_call(ref, ours.config, s, [0, 1, 2], 350.0, sound=True, fps=16.0)
    got2 = ours(s["ids"], s["vision"], 350.0, sound=s["sound"], sound_timesteps=350.0, fps=16.0)
    assert rel_l2(got2["vision"], v2[0]) < TOL and rel_l2(got2["sound"], snd2[0]) < TOL
    assert rel_l2(got2["vision"], v[0]) > 1e-4           # the action tokens were attended to


def test_cached_text_kv_equals_full_step(saved):
    ours = c3.load(saved[1])
    s = _sample(seed=2)
    cfg = ours.config
    layout = c3.SequenceLayout(5, (3, 2, 3))
    pos = c3.position_ids(cfg, layout, 24.0)
    cache = ours.encode_text(s["ids"], pos[:, :5])
    a = ours(s["ids"], s["vision"], 500.0, text_cache=cache)["vision"]
    b = ours(s["ids"], s["vision"], 500.0)["vision"]
    assert torch.equal(a, b)
    c = ours(s["ids"], s["vision"], 100.0, text_cache=cache)["vision"]   # reused at another step
    assert rel_l2(c, ours(s["ids"], s["vision"], 100.0)["vision"]) == 0.0
    with pytest.raises(LayoutError, match="text_cache"):
        ours(s["ids"][:4], s["vision"], 100.0, text_cache=cache)


def test_position_ids_match_the_pipeline():
    from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import (
        get_3d_mrope_ids_text_tokens,
        get_3d_mrope_ids_vae_tokens,
    )
    cfg = c3.NANO
    U, grid = 7, (5, 3, 4)
    text, nxt = get_3d_mrope_ids_text_tokens(U, 0, use_float_positions=True)
    start = nxt + cfg.unified_3d_mrope_temporal_modality_margin
    vis, _ = get_3d_mrope_ids_vae_tokens(*grid, start, fps=30.0, base_fps=24.0, temporal_compression_factor=4)
    snd, _ = get_3d_mrope_ids_vae_tokens(9, 1, 1, start, fps=25.0, base_fps=24.0, temporal_compression_factor=1)
    act, _ = get_3d_mrope_ids_vae_tokens(4, 1, 1, start, fps=30.0, base_fps=24.0, temporal_compression_factor=1,
                                         base_temporal_compression_factor=4, start_frame_offset=1)
    want = torch.cat([text, vis, snd, act], dim=1).double()
    got = c3.position_ids(cfg, c3.SequenceLayout(U, grid, 9, 4), fps=30.0)
    assert torch.allclose(got, want, rtol=0, atol=2e-3)      # pipeline ids are float32
    assert got.dtype == torch.float64
    # fps modulation off: integer ids
    cfg2 = c3.Cosmos3Config(enable_fps_modulation=False)
    vis_i, _ = get_3d_mrope_ids_vae_tokens(*grid, U + cfg2.unified_3d_mrope_temporal_modality_margin)
    got2 = c3.position_ids(cfg2, c3.SequenceLayout(U, grid), fps=30.0)[:, U:]
    assert torch.equal(got2, vis_i.double())


def test_mrope_table_matches_diffusers_rotary():
    # small ids: diffusers builds the angles in float32, which is exact enough only while ids
    # stay small (at Nano's margin of 15000 its angles carry ~1e-4 absolute error; ours are
    # float64-exact -- shown below)
    cfg = c3.Cosmos3Config(unified_3d_mrope_temporal_modality_margin=20)
    pos = c3.position_ids(cfg, c3.SequenceLayout(6, (3, 2, 2), 4), fps=30.0)
    rot = Cosmos3VLTextRotaryEmbedding(128, 5e6, (24, 20, 20))
    cos_d, sin_d = rot(pos.float()[:, None], "cpu", torch.float32)
    cos, sin = rope_tables.to_cos_sin(rope_tables.cosmos3_mrope(pos, 128))
    assert (cos_d[0] - torch.cat([cos, cos], -1)).abs().max() < 2e-5
    assert (sin_d[0] - torch.cat([sin, sin], -1)).abs().max() < 2e-5
    # large ids: ours equals the float64 formula; diffusers' float32 drifts
    big = c3.position_ids(c3.NANO, c3.SequenceLayout(6, (3, 2, 2), 4), fps=30.0)
    ang = rope_tables.cosmos3_mrope(big, 128)
    assert torch.allclose(ang[:, 0], big[0], rtol=1e-15, atol=0)       # j=0: theta^0 = 1, time axis
    cos_b, _ = rot(big.float()[:, None], "cpu", torch.float32)
    drift = (cos_b[0, :, :64].double() - torch.cos(ang)).abs().max().item()
    assert 1e-6 < drift < 1e-2
    with pytest.raises(ValueError, match="sections"):
        rope_tables.cosmos3_mrope(pos, 64)


def test_upstream_model_prefix_layout_and_strict_keys(tmp_path, saved):
    _, path = saved
    r = open_checkpoint(path)
    up = tmp_path / "up"
    up.mkdir()
    (up / "config.json").write_text((path / "config.json").read_text())
    save_safetensors_atomic({("" if k.startswith("lm_head") else "model.") + k: r.get(k) for k in r.keys()},
                            up / "model.safetensors")
    assert c3.detect(up) == "upstream"
    s = _sample()
    a = c3.load(up)(s["ids"], s["vision"], 10.0)["vision"]
    b = c3.load(path)(s["ids"], s["vision"], 10.0)["vision"]
    assert torch.equal(a, b)
    save_safetensors_atomic({k: r.get(k) for k in r.keys() if "layers.1.mlp_moe_gen.up_proj" not in k},
                            up / "model.safetensors")
    (up / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(CheckpointError):
        c3.load(up)


def test_relu2_config_and_sharded_files(tmp_path):
    d = c3.make_tiny_checkpoint(tmp_path / "r", seed=3, hidden_act="relu2", sharded=True)
    ref = _diffusers_model(seed=3, hidden_act="relu2")
    sd = c3.load(d).state_dict()
    ref.load_state_dict(sd, strict=True)   # our names and shapes are diffusers' for relu2 too
    ours = c3.load(d)
    s = _sample(seed=4)
    want = _diffusers_call(ref, ours.config, s, [0, 1, 2], 900.0)[0][0]
    assert rel_l2(ours(s["ids"], s["vision"], 900.0)["vision"], want) < TOL


def test_nano_config_and_family_detection(tmp_path):
    assert (c3.NANO.num_attention_heads, c3.NANO.num_key_value_heads, c3.NANO.head_dim) == (32, 8, 128)
    assert c3.NANO.rope_axes_dim == (24, 20, 20) and c3.NANO.rope_theta == 5e6
    assert c3.NANO.patch_latent_dim == 48 * 4 and c3.NANO.sound_dim == 64 and c3.NANO.sound_latent_fps == 25.0
    import phyx.models as pm
    d = c3.make_tiny_checkpoint(tmp_path / "d")
    assert pm.detect(d) == "cosmos3"
