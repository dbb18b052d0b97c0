"""LingBot-World on phyx: the camera-controlled Wan2.2 i2v DiT checked against a plain-torch
transcription of upstream's WanModel.forward (wan/modules/model.py of LingBot-World: complex128
RoPE, float64 time embedding, camera patch embedding and per-block injector), run on the shipped
example trajectories; without camera input it equals Wan2.2 i2v."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import phyx.models as pm
from phyx.models.wan import WanModel, make_tiny_checkpoint
from phyx.models.wan import camera as cam
from phyx.testing import rel_l2

EXAMPLES = Path("/work/shared/data/lingbot-world-examples")


# ---- upstream transcription (official key names, fp32 activations) ----------------------------
def _lin(sd, name, x):
    return F.linear(x, sd[name + ".weight"], sd[name + ".bias"])


def _rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _rope_apply(x, grid, head_dim):
    """Upstream: complex128 table [1024, D/2] split (c - 2(c//3), c//3, c//3), x in float64."""
    def params(dim):
        f = torch.outer(torch.arange(1024), 1.0 / torch.pow(10000, torch.arange(0, dim, 2).to(torch.float64) / dim))
        return torch.polar(torch.ones_like(f), f)
    d = head_dim
    freqs = torch.cat([params(d - 4 * (d // 6)), params(2 * (d // 6)), params(2 * (d // 6))], dim=1)
    c = d // 2
    fr = freqs.split([c - 2 * (c // 3), c // 3, c // 3], dim=1)
    f, h, w = grid
    table = torch.cat([fr[0][:f].view(f, 1, 1, -1).expand(f, h, w, -1), fr[1][:h].view(1, h, 1, -1).expand(f, h, w, -1),
                       fr[2][:w].view(1, 1, w, -1).expand(f, h, w, -1)], dim=-1).reshape(f * h * w, 1, -1)
    b, s, n, _ = x.shape
    xc = torch.view_as_complex(x.to(torch.float64).reshape(b, s, n, -1, 2))
    return torch.view_as_real(xc * table).flatten(3).float()


def _attn(q, k, v):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def upstream_forward(sd, cfg, x, y, t, context, c2ws_emb):
    from einops import rearrange

    n, hd, eps, dim = cfg.num_heads, cfg.head_dim, cfg.eps, cfg.dim
    x = torch.cat([x, y], dim=1)
    x = F.conv3d(x, sd["patch_embedding.weight"], sd["patch_embedding.bias"], stride=cfg.patch_size)
    grid = tuple(x.shape[2:])
    x = x.flatten(2).transpose(1, 2)
    b, L = x.shape[:2]
    half = cfg.freq_dim // 2
    pos = t.to(torch.float64)
    sinus = torch.outer(pos, torch.pow(10000, -torch.arange(half).to(pos).div(half)))
    sinus = torch.cat([torch.cos(sinus), torch.sin(sinus)], dim=1).float()
    e = _lin(sd, "time_embedding.2", F.silu(_lin(sd, "time_embedding.0", sinus)))
    e0 = _lin(sd, "time_projection.1", F.silu(e)).unflatten(1, (6, dim))
    ctx = torch.cat([context, context.new_zeros(b, cfg.text_len - context.shape[1], context.shape[2])], 1)
    ctx = _lin(sd, "text_embedding.2", F.gelu(_lin(sd, "text_embedding.0", ctx), approximate="tanh"))
    c = None
    if c2ws_emb is not None:
        p = cfg.patch_size
        c = rearrange(c2ws_emb, "b c (f c1) (h c2) (w c3) -> b (f h w) (c c1 c2 c3)", c1=p[0], c2=p[1], c3=p[2])
        c = _lin(sd, "patch_embedding_wancamctrl", c)
        c = c + _lin(sd, "c2ws_hidden_states_layer2", F.silu(_lin(sd, "c2ws_hidden_states_layer1", c)))
    for i in range(cfg.num_layers):
        pre = f"blocks.{i}."
        m = (sd[pre + "modulation"] + e0).chunk(6, dim=1)
        hx = F.layer_norm(x, (dim,), eps=eps) * (1 + m[1]) + m[0]
        q = _rms(_lin(sd, pre + "self_attn.q", hx), sd[pre + "self_attn.norm_q.weight"], eps).view(b, L, n, hd)
        k = _rms(_lin(sd, pre + "self_attn.k", hx), sd[pre + "self_attn.norm_k.weight"], eps).view(b, L, n, hd)
        v = _lin(sd, pre + "self_attn.v", hx).view(b, L, n, hd)
        o = _attn(_rope_apply(q, grid, hd), _rope_apply(k, grid, hd), v).flatten(2)
        x = x + _lin(sd, pre + "self_attn.o", o) * m[2]
        if c is not None:
            hid = _lin(sd, pre + "cam_injector_layer2", F.silu(_lin(sd, pre + "cam_injector_layer1", c))) + c
            x = (1.0 + _lin(sd, pre + "cam_scale_layer", hid)) * x + _lin(sd, pre + "cam_shift_layer", hid)
        hx = F.layer_norm(x, (dim,), sd[pre + "norm3.weight"], sd[pre + "norm3.bias"], eps)
        q = _rms(_lin(sd, pre + "cross_attn.q", hx), sd[pre + "cross_attn.norm_q.weight"], eps).view(b, L, n, hd)
        k = _rms(_lin(sd, pre + "cross_attn.k", ctx), sd[pre + "cross_attn.norm_k.weight"], eps).view(b, -1, n, hd)
        v = _lin(sd, pre + "cross_attn.v", ctx).view(b, -1, n, hd)
        x = x + _lin(sd, pre + "cross_attn.o", _attn(q, k, v).flatten(2))
        hx = F.layer_norm(x, (dim,), eps=eps) * (1 + m[4]) + m[3]
        x = x + _lin(sd, pre + "ffn.2", F.gelu(_lin(sd, pre + "ffn.0", hx), approximate="tanh")) * m[5]
    hm = (sd["head.modulation"] + e.unsqueeze(1)).chunk(2, dim=1)
    out = _lin(sd, "head.head", F.layer_norm(x, (dim,), eps=eps) * (1 + hm[1]) + hm[0])
    f, h, w = grid
    out = out.view(b, f, h, w, *cfg.patch_size, cfg.out_dim)
    return torch.einsum("bfhwpqrc->bcfphqwr", out).reshape(b, cfg.out_dim, f * cfg.patch_size[0],
                                                            h * cfg.patch_size[1], w * cfg.patch_size[2])




@pytest.fixture(scope="module")
def lingbot(tmp_path_factory):
    d = make_tiny_checkpoint(tmp_path_factory.mktemp("lingbot"), "lingbot", seed=3)
    return pm.load(d), d


def _inputs(cfg, lat=(3, 4, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    F_, H, W = lat
    x = torch.randn(1, cfg.out_dim, F_, H, W, generator=g)
    y = torch.randn(1, cfg.in_dim - cfg.out_dim, F_, H, W, generator=g)
    ctx = torch.randn(1, 11, cfg.text_dim, generator=g)
    return x, y, torch.tensor([947.0]), ctx


def test_matches_upstream_transcription_with_camera(lingbot):
    model, _ = lingbot
    cfg = model.cfg
    assert cfg.camera_channels == 6 and cfg.camera_in_features == 6 * 64 * 4
    x, y, t, ctx = _inputs(cfg)
    K = np.array([[416.0, 240.0, 416.0, 240.0]])
    poses = np.stack([np.eye(4)] * 9)          # moves along x, then turns 90 degrees about y
    poses[4:, 0, 3] = 1.0
    poses[8, :3, :3] = np.array([[0, 0, 1.0], [0, 1, 0], [-1, 0, 0]])
    c = cam.prepare_camera(K, poses, 4 * 8, 6 * 8, frame_num=9)
    assert c.embedding.shape == (1, 384, 3, 4, 6)
    sd = {k: v.float() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ours = model(x, t, ctx, y=y, cam=c.embedding)
        ref = upstream_forward(sd, cfg, x, y, t, ctx, c.embedding)
        ours_nocam = model(x, t, ctx, y=y)
        ref_nocam = upstream_forward(sd, cfg, x, y, t, ctx, None)
    assert rel_l2(ours, ref) < 1e-5, rel_l2(ours, ref)
    assert rel_l2(ours_nocam, ref_nocam) < 1e-5
    assert rel_l2(ours, ours_nocam) > 1e-2           # the camera does change the prediction


def test_without_camera_equals_wan22_i2v(lingbot, tmp_path):
    model, _ = lingbot
    i2v_cfg = model.cfg.replace(camera_channels=None)
    plain = WanModel(i2v_cfg)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and unexpected and all("cam" in k or "c2ws" in k for k in unexpected)
    x, y, t, ctx = _inputs(model.cfg)
    with torch.no_grad():
        assert torch.equal(model(x, t, ctx, y=y), plain.eval()(x, t, ctx, y=y))


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="LingBot-World example trajectories not found")
def test_runs_on_shipped_trajectories(lingbot):
    model, _ = lingbot
    cfg = model.cfg
    outs = []
    for ex in sorted(p for p in EXAMPLES.glob("[0-9][0-9]") if p.is_dir()):
        K, P = cam.load_camera_dir(ex)
        c = cam.prepare_camera(K, P, 32, 48, frame_num=9)    # 9 frames -> 3 latent frames of 4x6
        x, y, t, ctx = _inputs(cfg)
        with torch.no_grad():
            out = model(x, t, ctx, y=y, cam=c.embedding)
        assert out.shape == x.shape and torch.isfinite(out).all()
        outs.append(out)
    assert len(outs) == 3 and not torch.equal(outs[0], outs[1])


def test_bf16_camera_path_is_close(lingbot):
    model, d = lingbot
    m16 = pm.load(d, dtype=torch.bfloat16)
    x, y, t, ctx = _inputs(model.cfg)
    emb = torch.randn(1, 384, 3, 4, 6) * 0.5
    with torch.no_grad():
        a, b = model(x, t, ctx, y=y, cam=emb), m16(x, t, ctx, y=y, cam=emb)
    assert rel_l2(b, a) < 3e-2
