"""xformers, liger_kernel and the opt-in sdpa shim against independent float64 references;
torch's sdpa_kernel keeps a kernel off CUDA; what is not served is refused naming the fix."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import phyx_patches
from phyx.errors import UnsupportedArgumentError


@pytest.fixture(params=["cpu", "npu-emulated"])
def backend(request):
    from phyx.tools.parity.backends import using_backend

    with using_backend(request.param, "fast") as b:
        yield b


def ref_attn(q, k, v, causal=False, bias=None):
    """float64 softmax attention, [B, S, H, K], causal top-left."""
    qd, kd, vd = (t.double().transpose(1, 2) for t in (q, k, v))
    s = qd @ kd.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if bias is not None:
        s = s + bias.double()
    if causal:
        i, j = torch.arange(q.shape[1])[:, None], torch.arange(k.shape[1])[None]
        s = s.masked_fill(j > i, float("-inf"))
    return (torch.softmax(s, -1) @ vd).transpose(1, 2)


def close(a, b, tol=1e-5):
    return (a.double() - b).abs().max().item() < tol


def test_xformers_memory_efficient_attention_and_biases(backend):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 7, 3, 8) for _ in range(3))
    bias = torch.randn(2, 3, 7, 7)
    with phyx_patches.scope(["xformers"]):
        import xformers.ops as xops
        from xformers.ops.fmha.attn_bias import BlockDiagonalMask

        assert close(xops.memory_efficient_attention(q, k, v), ref_attn(q, k, v))
        assert close(xops.memory_efficient_attention(q, k, v, attn_bias=xops.LowerTriangularMask()),
                     ref_attn(q, k, v, causal=True))
        assert close(xops.memory_efficient_attention(q, k, v, attn_bias=bias), ref_attn(q, k, v, bias=bias))
        assert close(xops.memory_efficient_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0]),
                     ref_attn(q[:, :, :1], k[:, :, :1], v[:, :, :1])[:, :, 0])
        # two packed sequences (4 + 3 tokens) in a batch of one, plain and causal
        pq, pk, pv = (t[:1] for t in (q, k, v))
        m = BlockDiagonalMask.from_seqlens([4, 3])
        for mask, causal in ((m, False), (m.make_causal(), True)):
            got = xops.memory_efficient_attention(pq, pk, pv, attn_bias=mask)
            for a, b in ((0, 4), (4, 7)):
                assert close(got[:, a:b], ref_attn(pq[:, a:b], pk[:, a:b], pv[:, a:b], causal))
        with pytest.raises(UnsupportedArgumentError, match="dropout"):
            xops.memory_efficient_attention(q, k, v, p=0.1)
        with pytest.raises(AttributeError, match="not served by the phyx_patches shim"):
            xops.fmha.cutlass


def test_liger_kernel_ops(backend):
    torch.manual_seed(1)
    x = torch.randn(2, 5, 16)
    w = torch.randn(16)
    ref_rms = x.double() * torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True) + 1e-6)
    with phyx_patches.scope(["liger_kernel"]):
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction
        from liger_kernel.ops.swiglu import LigerSiLUMulFunction
        from liger_kernel.transformers import LigerGEGLUMLP, LigerRMSNorm, liger_rotary_pos_emb

        assert close(LigerRMSNormFunction.apply(x, w, 1e-6), ref_rms * w.double())
        assert close(LigerRMSNormFunction.apply(x, w, 1e-6, 1.0), ref_rms * (w.double() + 1))
        norm = LigerRMSNorm(16)
        assert close(norm(x), ref_rms)
        a, b = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
        assert close(LigerSiLUMulFunction.apply(a, b), F.silu(a.double()) * b.double())
        mlp = LigerGEGLUMLP(SimpleNamespace(hidden_size=16, intermediate_size=8))
        want = mlp.down_proj(F.gelu(mlp.gate_proj(x), approximate="tanh") * mlp.up_proj(x))
        assert close(mlp(x), want.double())
        # HF rotate-half RoPE: q, k [B, H, S, D]; cos/sin [S, D] with repeated halves
        q, k = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
        ang = torch.arange(5.0)[:, None] * torch.tensor([0.1, 0.2, 0.3, 0.4])
        cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)

        def rot(t):
            t1, t2 = t.double().chunk(2, -1)
            return t.double() * cos.double() + torch.cat([-t2, t1], -1) * sin.double()
        gq, gk = liger_rotary_pos_emb(q, k, cos, sin)
        assert close(gq, rot(q)) and close(gk, rot(k))
        import liger_kernel.transformers as lt

        with pytest.raises(AttributeError, match="not served by the phyx_patches shim"):
            lt.LigerFusedLinearCrossEntropyLoss


@pytest.mark.parametrize("kind", ["none", "causal", "bool", "gqa"])
def test_sdpa_shim_routes_sdpa_through_phyx(backend, kind):
    from phyx.tools.porting.accounting import OpAccounting

    torch.manual_seed(2)
    q = torch.randn(2, 4, 6, 8)
    k, v = torch.randn(2, 4 if kind != "gqa" else 2, 6, 8), torch.randn(2, 4 if kind != "gqa" else 2, 6, 8)
    mask = torch.rand(2, 1, 6, 6) > 0.3
    mask[..., 0] = True
    kw = {"none": {}, "causal": {"is_causal": True}, "bool": {"attn_mask": mask},
          "gqa": {"enable_gqa": True}}[kind]
    want = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), **kw)
    with phyx_patches.scope(["sdpa"]), OpAccounting(torch.nn.Identity(), backend.device_type) as acct:
        got = F.scaled_dot_product_attention(q, k, v, **kw)
        with pytest.raises(UnsupportedArgumentError, match="dropout"):
            F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    assert acct.phyx_calls["attention"] == 1
    assert close(got, want)
    assert F.scaled_dot_product_attention is torch._C._nn.scaled_dot_product_attention


def test_sdpa_kernel_limited_to_cuda_kernels_still_runs(backend):
    from torch.nn.attention import SDPBackend

    q = torch.randn(1, 2, 5, 8)
    with phyx_patches.scope(["torch_cuda"]):
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
            out = F.scaled_dot_product_attention(q, q, q)
        with torch.backends.cuda.sdp_kernel(enable_math=False, enable_flash=False):
            out2 = F.scaled_dot_product_attention(q, q, q)
    assert close(out, F.scaled_dot_product_attention(q.double(), q.double(), q.double()))
    assert torch.equal(out, out2)
