"""phyx_patches: scoped shims for flash_attn, apex, transformer_engine and torch.cuda.

Each shim is checked against an independent plain-torch implementation of the upstream
library's documented semantics (flash-attn's bottom-right causal, apex/TE fp32 norms, TE's
rotate-half rope), on cpu (both policies) and npu-emulated; and leaving a scope must restore
sys.modules and every patched attribute exactly."""
from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import phyx_patches
import phyx_patches.liger_shim  # noqa: F401  (shim code, imported lazily: load it before snapshots)
import phyx_patches.sdpa_shim  # noqa: F401
import phyx_patches.xformers_shim  # noqa: F401
from phyx.errors import UnsupportedArgumentError

FIXTURE = Path(__file__).parent / "fixtures" / "port_scan_tree"
BACKENDS = [("cpu", "fast"), ("cpu", "reference"), ("npu-emulated", "fast")]
SHIM_MODULES = ("flash_attn", "flash_attn.flash_attn_interface", "flash_attn_interface", "apex",
                "apex.normalization", "transformer_engine", "transformer_engine.pytorch",
                "transformer_engine.pytorch.attention")


@pytest.fixture(params=BACKENDS, ids=lambda p: f"{p[0]}-{p[1]}")
def backend(request):
    from phyx.tools.parity.backends import using_backend

    name, policy = request.param
    try:
        ctx = using_backend(name, policy)
        b = ctx.__enter__()
    except Exception as e:  # the plug-in is being written by another helper
        pytest.skip(f"backend {name!r} not usable here yet: {type(e).__name__}: {e}")
    try:
        yield b
    finally:
        ctx.__exit__(None, None, None)


# --- independent references (plain torch, float64) -------------------------------------------
def ref_flash(q, k, v, causal=False, scale=None):
    """flash-attn semantics: [B,S,N,D], GQA, causal aligned bottom-right, empty rows -> 0."""
    B, Sq, N, D = q.shape
    Sk, Nk = k.shape[1], k.shape[2]
    scale = 1 / math.sqrt(D) if scale is None else scale
    qd, kd, vd = (t.double().transpose(1, 2) for t in (q, k, v))
    kd, vd = kd.repeat_interleave(N // Nk, 1), vd.repeat_interleave(N // Nk, 1)
    s = qd @ kd.transpose(-1, -2) * scale
    if causal:
        i = torch.arange(Sq)[:, None]
        j = torch.arange(Sk)[None]
        s = s.masked_fill(~(j <= i + Sk - Sq), float("-inf"))
    p = torch.softmax(s, -1).nan_to_num(0.0)
    return (p @ vd).transpose(1, 2)


def ref_rms(x, w, eps):
    xd = x.double()
    return xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + eps) * w.double()


def ref_te_rope(t, freqs, interleaved=False):
    """TE's formula on [B, S, N, D] with freqs [S, 1, 1, d]: t*cos + rotate_half(t)*sin."""
    d = freqs.shape[-1]
    f = freqs[: t.shape[1]].reshape(1, t.shape[1], 1, d).double()
    x, rest = t[..., :d].double(), t[..., d:].double()
    if interleaved:
        x1, x2 = x[..., 0::2], x[..., 1::2]
        rot = torch.stack((-x2, x1), -1).flatten(-2)
    else:
        x1, x2 = x.chunk(2, -1)
        rot = torch.cat((-x2, x1), -1)
    return torch.cat((x * f.cos() + rot * f.sin(), rest), -1)


def close(a, b, tol=2e-5):
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a.double() - b.double()).abs().max().item()
    assert err < tol, f"max abs error {err:.3g} >= {tol}"


# --- flash_attn ----------------------------------------------------------------------------
@pytest.mark.parametrize("sq,sk,causal", [(7, 7, True), (4, 9, True), (9, 4, True), (5, 8, False)])
def test_flash_attn_func_matches_flash_semantics(backend, sq, sk, causal):
    g = torch.Generator().manual_seed(sq * 31 + sk)
    q = torch.randn(2, sq, 4, 16, generator=g)
    k = torch.randn(2, sk, 2, 16, generator=g)   # GQA 4:2
    v = torch.randn(2, sk, 2, 16, generator=g)
    with phyx_patches.scope(["flash_attn"]):
        from flash_attn import flash_attn_func
        out = flash_attn_func(q, k, v, causal=causal, softmax_scale=0.3)
    close(out, ref_flash(q, k, v, causal, 0.3))
    if causal and sq > sk:   # query rows that see no key are 0, as flash-attn documents
        assert out[:, : sq - sk].abs().max().item() == 0.0


def test_flash_attn_varlen_self_and_cross(backend):
    g = torch.Generator().manual_seed(1)
    lens_q, lens_k = [3, 6, 1], [5, 2, 4]
    q = torch.randn(sum(lens_q), 4, 8, generator=g)
    k = torch.randn(sum(lens_k), 4, 8, generator=g)
    v = torch.randn(sum(lens_k), 4, 8, generator=g)
    cu = lambda ls: torch.tensor([0] + list(torch.tensor(ls).cumsum(0)), dtype=torch.int32)
    with phyx_patches.scope(["flash_attn"]):
        from flash_attn.flash_attn_interface import flash_attn_varlen_func
        cross = flash_attn_varlen_func(q, k, v, cu(lens_q), cu(lens_k), 6, 5, causal=True)
        selfo = flash_attn_varlen_func(q, q, q, cu(lens_q), cu(lens_q), 6, 6, causal=True)
    ref_c, ref_s = [], []
    for qs, ks, vs in zip(q.split(lens_q), k.split(lens_k), v.split(lens_k)):
        ref_c.append(ref_flash(qs[None], ks[None], vs[None], True)[0])
    for qs in q.split(lens_q):
        ref_s.append(ref_flash(qs[None], qs[None], qs[None], True)[0])
    close(cross, torch.cat(ref_c))
    close(selfo, torch.cat(ref_s))


def test_flash_attn_refuses_what_it_cannot_honour():
    q = torch.randn(1, 4, 2, 8)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    with phyx_patches.scope(["flash_attn"]):
        import flash_attn
        with pytest.raises(UnsupportedArgumentError, match="return_attn_probs"):
            flash_attn.flash_attn_func(q, q, q, return_attn_probs=True)
        with pytest.raises(UnsupportedArgumentError, match="dropout"):
            flash_attn.flash_attn_func(q, q, q, dropout_p=0.1)
        with pytest.raises(UnsupportedArgumentError, match="window_size"):
            flash_attn.flash_attn_func(q, q, q, window_size=(4, 0))
        with pytest.raises(UnsupportedArgumentError, match="max_seqlen"):
            flash_attn.flash_attn_varlen_func(q[0], q[0], q[0], cu, cu, 2, 2)
        with pytest.raises(UnsupportedArgumentError, match="cumulative"):
            flash_attn.flash_attn_varlen_func(q[0], q[0], q[0], torch.tensor([0, 3]), cu, 4, 4)
        with pytest.raises(AttributeError, match="not served"):
            flash_attn.some_private_kernel
        with pytest.raises(ImportError):
            from flash_attn.bert_padding import unpad_input  # noqa: F401


def test_fa3_interface_returns_out_and_lse_or_refuses_lse_use():
    q, k = torch.randn(1, 5, 2, 8), torch.randn(1, 5, 2, 8)
    from phyx.tools.parity.backends import using_backend
    with phyx_patches.scope(["flash_attn"]):
        import flash_attn_interface
        for policy in ("reference", "fast"):
            with using_backend("cpu", policy):
                out, lse = flash_attn_interface.flash_attn_func(q, k, k, causal=True)
                close(out, ref_flash(q, k, k, True))
                if isinstance(lse, torch.Tensor):   # reference kernel: a real log-sum-exp
                    s = (q.double().transpose(1, 2) @ k.double().transpose(1, 2).transpose(-1, -2)) / math.sqrt(8)
                    s = s.masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), float("-inf"))
                    close(lse, torch.logsumexp(s, -1), 1e-4)
                else:                               # torch.sdpa cannot return it: any use raises
                    with pytest.raises(UnsupportedArgumentError, match="softmax_lse"):
                        lse.exp()
                only = flash_attn_interface.flash_attn_func(q, k, k, return_attn_probs=False)
                assert isinstance(only, torch.Tensor)


# --- apex / transformer_engine ---------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.bfloat16, 1e-2)])
def test_apex_norms_keep_fp32_numerics(backend, dtype, tol):
    x = torch.randn(2, 3, 16).to(dtype)
    with phyx_patches.scope(["apex"]):
        from apex.normalization import FusedLayerNorm, FusedRMSNorm
        rms, ln = FusedRMSNorm(16, eps=1e-6), FusedLayerNorm(16, eps=1e-6)
        with torch.no_grad():
            rms.weight.normal_()
            ln.weight.normal_(), ln.bias.normal_()
        y_rms, y_ln = rms(x), ln(x)
        multi = FusedRMSNorm((3, 16))(x)
    assert y_rms.dtype == dtype and y_ln.dtype == dtype
    # apex: fp32 compute, gamma applied in fp32, one rounding at the end
    close(y_rms, ref_rms(x.float(), rms.weight.detach(), 1e-6).to(dtype), tol)
    close(y_ln, F.layer_norm(x.float(), (16,), ln.weight.detach(), ln.bias.detach(), 1e-6).to(dtype), tol)
    close(multi, ref_rms(x.float().flatten(-2), torch.ones(48), 1e-5).view_as(x).to(dtype), tol)


def test_te_rmsnorm_and_rope(backend):
    g = torch.Generator().manual_seed(3)
    t = torch.randn(2, 6, 3, 16, generator=g)
    with phyx_patches.scope(["transformer_engine"]):
        import transformer_engine.pytorch as te
        from transformer_engine.pytorch.attention import apply_rotary_pos_emb
        norm = te.RMSNorm(16, eps=1e-6, zero_centered_gamma=True)
        with torch.no_grad():
            norm.weight.normal_()
        y = norm(t)
        freqs = te.RotaryPositionEmbedding(16)(10)
        part = te.RotaryPositionEmbedding(16, rotary_percent=0.5, interleaved=True)(10)
        bshd = apply_rotary_pos_emb(t, freqs, tensor_format="bshd")
        sbhd = apply_rotary_pos_emb(t.transpose(0, 1), freqs, tensor_format="sbhd")
        inter = apply_rotary_pos_emb(t, part, tensor_format="bshd", interleaved=True)
        cu = torch.tensor([0, 2, 6], dtype=torch.int32)
        thd = apply_rotary_pos_emb(t[0], freqs, tensor_format="thd", cu_seqlens=cu)
        with pytest.raises(UnsupportedArgumentError, match="repeat"):
            apply_rotary_pos_emb(t, torch.rand(10, 1, 1, 16), tensor_format="bshd")
    close(y, ref_rms(t, 1 + norm.weight.detach(), 1e-6))
    close(bshd, ref_te_rope(t, freqs))
    close(sbhd.transpose(0, 1), ref_te_rope(t, freqs))
    close(inter, ref_te_rope(t, part, interleaved=True))
    ref_thd = torch.cat([ref_te_rope(t[0, :2][None], freqs)[0], ref_te_rope(t[0, 2:][None], freqs)[0]])
    close(thd, ref_thd)


# --- torch.cuda ---------------------------------------------------------------------------
def test_torch_cuda_calls_go_to_the_backend(backend):
    with phyx_patches.scope(["torch_cuda"]):
        assert torch.cuda.is_available()
        assert torch.cuda.device_count() == backend.device.device_count()
        torch.cuda.set_device(0)
        x = torch.ones(3).cuda()
        m = torch.nn.Linear(2, 2).cuda()
        y = torch.zeros(2, device="cuda").to("cuda:0")
        z = torch.ones(2).to(torch.device("cuda"), torch.float16)
        assert x.device.type == y.device.type == z.device.type == backend.device_type
        assert m.weight.device.type == backend.device_type and z.dtype == torch.float16
        torch.cuda.manual_seed(5)
        a = torch.randn(4, device="cuda")
        torch.cuda.manual_seed(5)
        assert torch.equal(a, torch.randn(4, device="cuda"))
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        with torch.cuda.stream(torch.cuda.Stream()):
            _ = x * 2
        end.record()
        torch.cuda.synchronize()
        assert start.elapsed_time(end) >= 0
        assert torch.cuda.max_memory_allocated() >= 0
        with torch.autocast("cuda", dtype=torch.bfloat16):
            assert (m(torch.ones(1, 2)).dtype == torch.bfloat16) == (backend.device_type == "cpu")
    assert not torch.cuda.is_available()


# --- scoping -----------------------------------------------------------------------------
def _snapshot():
    watch = (torch, torch.cuda, torch.cuda.amp, torch.amp, torch.Tensor, torch.nn.Module)
    return ({k: v for k, v in sys.modules.items()},
            [dict(vars(o)) for o in watch])


def test_nothing_is_patched_on_import_and_scope_restores_exactly():
    assert phyx_patches.active() == []
    assert not any(m in sys.modules for m in SHIM_MODULES)
    mods0, attrs0 = _snapshot()
    sentinel = object()
    sys.modules["apex"] = sentinel   # a pre-existing (real) module must come back as it was
    try:
        with pytest.raises(RuntimeError, match="boom"):
            with phyx_patches.scope():
                assert set(phyx_patches.active()) == set(phyx_patches.DEFAULT)   # sdpa is opt-in
                import apex.normalization  # noqa: F401
                assert sys.modules["apex"] is not sentinel
                with phyx_patches.scope(["flash_attn"]):   # nested: already active, no-op
                    assert phyx_patches.active().count("flash_attn") == 1
                assert torch.Tensor.cuda is not attrs0[4].get("cuda", object())
                raise RuntimeError("boom")
        assert sys.modules["apex"] is sentinel
    finally:
        sys.modules.pop("apex", None)
    mods1, attrs1 = _snapshot()
    assert set(mods1) == set(mods0) and all(mods1[k] is mods0[k] for k in mods0)
    for before, after in zip(attrs0, attrs1):
        assert before.keys() == after.keys()
        assert all(after[k] is before[k] for k in before)
    assert "cuda" not in vars(torch.Tensor)   # inherited method: deleted, not copied back


def test_enable_disable_explicit():
    layer = phyx_patches.enable(["apex", "flash_attn"])
    try:
        assert "apex" in sys.modules and "flash_attn" in sys.modules
        assert phyx_patches.active() == ["flash_attn", "apex"] or set(phyx_patches.active()) == {"apex", "flash_attn"}
    finally:
        phyx_patches.disable()
    assert layer.closed and phyx_patches.active() == []
    assert "apex" not in sys.modules and "flash_attn" not in sys.modules
    with pytest.raises(ValueError, match="unknown phyx_patches shim"):
        phyx_patches.enable(["cudnn"])
    assert phyx_patches.active() == []


# --- an upstream-style module, unchanged -----------------------------------------------------
def ref_block(sd, x, context, heads=4, causal=True):
    """The fixture Block's math, written from the upstream libraries' documented semantics."""
    b, s, d = x.shape
    hd = d // heads
    xd = x.double()
    sdd = {k: v.double() for k, v in sd.items()}
    h = F.layer_norm(xd, (d,), sdd["norm1.weight"], sdd["norm1.bias"], 1e-6)
    q, k, v = F.linear(h, sdd["qkv.weight"], sdd["qkv.bias"]).view(b, s, 3, heads, hd).unbind(2)
    q, k = ref_rms(q, sdd["norm_q.weight"], 1e-6), ref_rms(k, sdd["norm_k.weight"], 1e-6)
    inv = 1.0 / (10000 ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    f = torch.outer(torch.arange(s, dtype=torch.float64), inv)
    freqs = torch.cat((f, f), -1).reshape(s, 1, 1, hd)
    q, k = ref_te_rope(q, freqs), ref_te_rope(k, freqs)
    att = ref_flash(q, k, v, causal, 1 / math.sqrt(hd))
    xd = xd + F.linear(att.reshape(b, s, d), sdd["proj.weight"], sdd["proj.bias"])
    cq = F.linear(xd, sdd["cross_q.weight"], sdd["cross_q.bias"]).view(b, s, heads, hd)
    ctx = context.double().view(b, context.shape[1], heads, hd)
    return xd + ref_flash(cq, ctx, ctx, True).reshape(b, s, d)


def test_upstream_module_runs_unchanged_and_matches_reference(backend):
    sys.path.insert(0, str(FIXTURE))
    try:
        with phyx_patches.scope():
            sys.modules.pop("upstream_block", None)
            upstream = importlib.import_module("upstream_block")
            model, x, context, out = upstream.run(seed=0)
    finally:
        sys.path.remove(str(FIXTURE))
        sys.modules.pop("upstream_block", None)
    assert out.device.type == backend.device_type
    ref = ref_block({k: v.detach().cpu() for k, v in model.state_dict().items()}, x.cpu(), context.cpu())
    close(out.cpu(), ref, 1e-4)
    assert "flash_attn" not in sys.modules and not torch.cuda.is_available()
