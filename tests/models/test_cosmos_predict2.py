"""Cosmos-Predict2 on phyx vs diffusers' CosmosTransformer3DModel (the oracle), fp32 on the CPU:
diffusers save_pretrained directories and official (net./net_ema.) layouts load and give the
same outputs; Video2World conditioning and the training loss match direct computations."""
from __future__ import annotations

import json

import pytest
import torch

from phyx.errors import CheckpointError
from phyx.io.checkpoint import open_checkpoint, save_safetensors_atomic
from phyx.models import cosmos_predict2 as cp
from phyx.models.common.init import init_seeded_
from phyx.testing import rel_l2
from phyx.tools.bench.models import patch_diffusers_cosmos_torchvision

diffusers = pytest.importorskip("diffusers")
TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _fp32_and_patch():
    patch_diffusers_cosmos_torchvision()
    torch.set_grad_enabled(False)
    yield
    torch.set_grad_enabled(True)


def _diffusers_model(variant, seed=0):
    cfg = cp.tiny_config(variant)
    d = cfg.to_diffusers_dict()
    d.pop("_class_name")
    m = diffusers.CosmosTransformer3DModel(**d).eval()
    init_seeded_(m, seed)
    return m


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = {}
    for variant in ("text2image", "video2world"):
        ref = _diffusers_model(variant, seed=1)
        path = tmp_path_factory.mktemp(variant)
        ref.save_pretrained(path)
        out[variant] = (ref, path)
    return out


def _inputs(B=2, T=3, H=8, W=8, C=4, S=7, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, T, H, W, generator=g)
    text = torch.randn(B, S, 24, generator=g)
    pad = (torch.rand(1, 1, 2 * H, 2 * W, generator=g) > 0.7).float()   # pixel-size mask: resized
    return x, text, pad


def test_text2image_matches_diffusers(saved):
    ref, path = saved["text2image"]
    ours = cp.load(path)
    assert not ours.config.video2world
    x, text, pad = _inputs(T=1)
    t = torch.tensor([0.3, 0.8])
    want = ref(x, t, text, padding_mask=pad, return_dict=False)[0]
    got = ours(x, t, text, padding_mask=pad)
    assert rel_l2(got, want) < TOL
    # the padding-mask channel matters (guards against it being dropped)
    other = ours(x, t, text, padding_mask=1 - pad)
    assert rel_l2(other, want) > 1e-3


def test_video2world_matches_diffusers(saved):
    ref, path = saved["video2world"]
    ours = cp.load(path)
    assert ours.config.video2world
    x, text, pad = _inputs()
    B, T = x.shape[0], x.shape[2]
    cond_mask = torch.zeros(B, 1, T, 8, 8)
    cond_mask[:, :, :1] = 1
    t5 = torch.rand(B, 1, T, 1, 1)
    want = ref(x, t5, text, fps=16, condition_mask=cond_mask, padding_mask=pad[..., ::2, ::2],
               return_dict=False)[0]
    got = ours(x, t5, text, fps=16, condition_mask=cond_mask, padding_mask=pad[..., ::2, ::2])
    assert rel_l2(got, want) < TOL
    assert rel_l2(ours(x, t5, text, fps=24, condition_mask=cond_mask, padding_mask=pad[..., ::2, ::2]),
                  want) > 1e-4   # fps reaches the RoPE time axis


def test_video2world_denoise_matches_pipeline_math(saved):
    """phyx's denoise() equals diffusers' Cosmos2VideoToWorldPipeline step (cond frames replaced,
    their own sigma, rectified-flow scaling) computed with the diffusers transformer."""
    ref, path = saved["video2world"]
    ours = cp.load(path)
    x, text, _ = _inputs(B=1, T=4)
    g = torch.Generator().manual_seed(5)
    cond = torch.randn(x.shape, generator=g)
    sigma = torch.tensor(2.5)
    got = cp.denoise(ours, x, sigma, text, cond_latents=cond, num_conditional_frames=2, fps=16)
    # the pipeline's own formulas, written out
    t = sigma / (sigma + 1)
    ind = torch.zeros(1, 1, 4, 1, 1)
    ind[:, :, :2] = 1
    t_cond = torch.tensor(1e-4) / (1 + 1e-4)
    net_in = ind * cond + (1 - ind) * (x * (1 - t))
    ts = ind * t_cond + (1 - ind) * t.view(1, 1, 1, 1, 1).expand(1, 1, 4, 1, 1)
    cmask = ind.expand(1, 1, 4, 8, 8)
    out = ref(net_in, ts, text, fps=16, condition_mask=cmask, padding_mask=torch.zeros(1, 1, 8, 8),
              return_dict=False)[0]
    want = ind * cond + (1 - ind) * ((1 - t) * x - t * out)
    assert rel_l2(got, want) < TOL
    assert torch.equal(got[:, :, :2], cond[:, :, :2])


def test_guided_x0_is_cond_plus_g_times_difference(saved):
    ours = cp.load(saved["text2image"][1])
    x, text, _ = _inputs(B=1, T=1)
    neg = torch.zeros_like(text)
    c = cp.denoise(ours, x, 1.0, text)
    u = cp.denoise(ours, x, 1.0, neg)
    assert rel_l2(cp.guided_x0(ours, x, 1.0, text, neg, 7.0), c + 7.0 * (c - u)) < 1e-6


def test_training_loss_matches_direct_computation(saved):
    ref, path = saved["text2image"]
    ours = cp.load(path)
    g = torch.Generator().manual_seed(11)
    x0, text, _ = _inputs(B=2, T=1)
    sigma = cp.sample_training_sigma(2, generator=g)
    eps = torch.randn(x0.shape, generator=g)
    res = cp.training_loss(ours, x0, text, sigma, eps)
    # direct: x_t = x0 + sigma eps; x0_pred = (1-t) x_t - t net((1-t) x_t, t); w = (s^2+1)/s^2
    s = sigma.float().view(2, 1, 1, 1, 1)
    xt = x0 + eps * s
    t = s / (s + 1)
    net = ref(xt * (1 - t), t.view(2), text, padding_mask=torch.zeros(1, 1, 8, 8), return_dict=False)[0]
    x0p = (1 - t) * xt - t * net
    direct = 10.0 * ((s ** 2 + 1) / s ** 2 * (x0 - x0p) ** 2).mean()
    assert abs(res["loss"].item() - direct.item()) / direct.item() < TOL
    # and the loss is differentiable through phyx's model
    with torch.enable_grad():
        ours.requires_grad_(True)
        loss = cp.training_loss(ours, x0, text, sigma, eps)["loss"]
        loss.backward()
    assert ours.proj_out.weight.grad is not None and ours.proj_out.weight.grad.abs().sum() > 0


def test_sigma_sampling_is_lognormal_and_reproducible():
    a = cp.sample_training_sigma(20000, generator=torch.Generator().manual_seed(0))
    b = cp.sample_training_sigma(20000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.dtype == torch.float64
    assert abs(a.log().mean().item()) < 0.03 and abs(a.log().std().item() - 1) < 0.03


def test_official_layout_net_and_ema(tmp_path, saved):
    off = cp.make_tiny_checkpoint(tmp_path / "off", seed=4, variant="video2world", layout="official")
    dif = cp.make_tiny_checkpoint(tmp_path / "dif", seed=4, variant="video2world", layout="diffusers")
    x, text, _ = _inputs(B=1)
    t = torch.tensor([0.5])
    net = cp.load(off)                       # default: the net. copy, as NVIDIA's inference does
    ema = cp.load(off, weights="ema")
    base = cp.load(dif)
    assert rel_l2(net(x, t, text), base(x, t, text)) < 1e-7
    assert rel_l2(ema(x, t, text), base(x, t, text)) > 1e-3
    # an independent check of the key mapping: diffusers' own converter maps the official keys
    from diffusers.loaders.single_file_utils import convert_cosmos_transformer_checkpoint_to_diffusers
    r = open_checkpoint(off / "model.safetensors")
    sd = {k: r.get(k) for k in r.keys() if k.startswith("net.")}
    conv = convert_cosmos_transformer_checkpoint_to_diffusers(sd)
    ref = _diffusers_model("video2world")
    ref.load_state_dict(conv, strict=True)
    want = ref(x, t, text, condition_mask=torch.zeros(1, 1, 3, 8, 8),
               padding_mask=torch.zeros(1, 1, 8, 8), return_dict=False)[0]
    assert rel_l2(net(x, t, text), want) < TOL


def test_official_ema_only_and_pickle_conversion(tmp_path):
    """An official .pt goes through `phyx convert` (weights_only) and then loads; a file with
    only net_ema.* keys loads that copy."""
    from phyx.cli import main

    off = cp.make_tiny_checkpoint(tmp_path / "off", seed=2, variant="text2image", layout="official")
    r = open_checkpoint(off / "model.safetensors")
    meta = r.metadata()
    ema_only = {k: r.get(k) for k in r.keys() if k.startswith("net_ema.")}
    torch.save({"model": ema_only, "iteration": 10}, tmp_path / "model.pt")
    (tmp_path / "conv").mkdir()
    assert main(["convert", str(tmp_path / "model.pt"), str(tmp_path / "conv" / "model.safetensors")]) == 0
    (tmp_path / "conv" / "config.json").write_text(meta["phyx_config"])
    m = cp.load(tmp_path / "conv")
    want = cp.load(off, weights="ema")
    x, text, _ = _inputs(B=1, T=1)
    assert rel_l2(m(x, torch.tensor([0.4]), text), want(x, torch.tensor([0.4]), text)) < 1e-7
    with pytest.raises(CheckpointError, match="pickle"):
        cp.load(tmp_path / "model.pt")


def test_sharded_diffusers_layout_and_strict_keys(tmp_path):
    sh = cp.make_tiny_checkpoint(tmp_path / "sh", seed=6, variant="text2image", sharded=True)
    assert (sh / "diffusion_pytorch_model.safetensors.index.json").exists()
    one = cp.make_tiny_checkpoint(tmp_path / "one", seed=6, variant="text2image")
    x, text, _ = _inputs(B=1, T=1)
    t = torch.tensor([0.2])
    assert rel_l2(cp.load(sh)(x, t, text), cp.load(one)(x, t, text)) == 0.0
    r = open_checkpoint(one)
    sd = {k: r.get(k) for k in r.keys() if "transformer_blocks.1.attn2.to_k" not in k}
    sd["transformer_blocks.0.attn1.extra.weight"] = torch.zeros(1)
    save_safetensors_atomic(sd, one / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CheckpointError) as e:
        cp.load(one)
    assert "transformer_blocks.1.attn2.to_k.weight" in str(e.value) and "extra" in str(e.value)


def test_phyx_models_load_detects_family(tmp_path):
    import phyx.models as pm

    d = cp.make_tiny_checkpoint(tmp_path / "d", seed=0, variant="text2image")
    assert pm.detect(d) == "cosmos-predict2"
    assert isinstance(pm.load(d), cp.Predict2DiT)


def test_presets_and_bad_inputs(saved):
    assert cp.PRESETS["14B-Video2World"].hidden_size == 5120 and cp.PRESETS["2B-Text2Image"].hidden_size == 2048
    ours = cp.load(saved["text2image"][1])
    x, text, _ = _inputs(B=1, T=1)
    with pytest.raises(ValueError, match="Text2Image"):
        ours(x, torch.tensor([0.1]), text, condition_mask=torch.zeros(1, 1, 1, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        ours(torch.randn(1, 3, 1, 8, 8), torch.tensor([0.1]), text)
    with pytest.raises(ValueError, match="max size"):
        ours(torch.randn(1, 4, 1, 8, 80), torch.tensor([0.1]), text)
    json.loads(json.dumps(cp.PRESETS["2B-Video2World"].to_diffusers_dict()))


def test_per_frame_view_equals_per_token_index():
    """The frame-broadcast view (one device) and the per-token index (Ulysses shards) apply the
    same per-frame values: identical numbers, forward and backward."""
    from phyx.models.cosmos_predict2.model import PerFrame

    B, T, HW, C = 2, 3, 5, 8
    x = torch.randn(B, T * HW, C, requires_grad=True)
    y = torch.randn(B, T * HW, C, dtype=torch.bfloat16)
    shift, scale, gate = (torch.randn(B, T, C, requires_grad=True) for _ in range(3))
    idx = torch.arange(T).repeat_interleave(HW)
    outs, grads = [], []
    for frames in (PerFrame(T, HW), PerFrame(T, HW, idx)):
        with torch.enable_grad():  # this module runs under no_grad
            out = frames.gated_residual(frames.norm_modulate(x, shift, scale, 1e-6), y, gate)
            out.square().sum().backward()
        outs.append(out.detach())
        grads.append([t.grad.clone() for t in (x, shift, scale, gate)])
        for t in (x, shift, scale, gate):
            t.grad = None
    assert torch.equal(outs[0], outs[1])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="do not make 3 frames"):
        PerFrame(T, HW).norm_modulate(x[:, :-1], shift, scale, 1e-6)
