"""CUDA backend on a real GPU: every registered kernel against phyx.ops.reference (run on the
same GPU in fp32 on upcast inputs), refusals of what a kernel declares it cannot do, the
Triton fused ops' rounding order, and an NCCL process group of world size 1.

Skipped on machines without a CUDA GPU (CI); run on one with
    python -m pytest -q tests/backend/test_cuda_backend.py
"""
from __future__ import annotations

import os

import pytest
import torch

from phyx.testing import rel_l2

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# relative L2 error bound per dtype against the fp32 reference of the same inputs
REL_TOL = {torch.float32: 3e-3, torch.bfloat16: 2e-2, torch.float16: 4e-3}
ATTN_KERNELS = ["sdpa", "sdpa.cudnn", "sdpa.flash", "sdpa.efficient", "flash_attn2", "flash_attn3",
                "flash_attn4", "flash_attn4_or_sdpa"]
# kernels that must run every case (they hand what their vendor kernel cannot do to SDPA)
RUN_EVERYTHING = ("sdpa", "flash_attn4_or_sdpa")


@pytest.fixture(scope="module")
def cuda():
    import phyx
    from phyx.tools.parity.backends import using_backend

    with using_backend("cuda", "fast") as b:
        yield b
    del phyx


def _kernel(op, name):
    from phyx.ops import available_kernels

    for k in available_kernels(op):
        if k.name == name:
            return k
    pytest.skip(f"kernel {name!r} is not registered on this machine")




# ------------------------------------------------------------------ attention cases
def _case(name, dtype, gen):
    """(q, k, v, kwargs, feature set used) on the GPU."""
    dev = "cuda"
    B, Sq, Skv, N, Nkv, D = 2, 77, 77, 4, 4, 64
    kw, feats = {}, set()
    if name == "odd":
        B, Sq, Skv = 1, 333, 129
    if name == "gqa":
        Nkv, feats = 1, {"gqa"}
    if name == "causal":
        kw, feats = {"is_causal": True}, {"causal"}
    if name == "causal_rect":
        Sq, Skv, kw, feats = 33, 61, {"is_causal": True}, {"causal"}
    if name == "kv_lens":
        kw, feats = {"kv_lens": torch.tensor([77, 40], device=dev)}, {"kv_lens"}
    if name == "kv_lens_zero":
        kw, feats = {"kv_lens": torch.tensor([0, 31], device=dev)}, {"kv_lens"}
    if name == "q_lens":
        kw, feats = {"q_lens": torch.tensor([77, 20], device=dev)}, {"q_lens"}
    if name == "scale":
        kw, feats = {"scale": 0.05}, {"scale"}
    q = torch.randn(B, Sq, N, D, generator=gen, device=dev).to(dtype)
    k = torch.randn(B, Skv, Nkv, D, generator=gen, device=dev).to(dtype)
    v = torch.randn(B, Skv, Nkv, D, generator=gen, device=dev).to(dtype)
    if name == "bool_mask":
        m = torch.rand(B, 1, Sq, Skv, generator=gen, device=dev) > 0.3
        m[0, 0, 5] = False  # one fully masked row
        kw, feats = {"attn_mask": m}, {"bool_mask"}
    if name == "additive_mask":
        m = torch.randn(B, N, Sq, Skv, generator=gen, device=dev)
        m[1, :, 7] = float("-inf")
        kw, feats = {"attn_mask": m.to(dtype)}, {"additive_mask"}
    if name == "mask_causal_kv":
        m = torch.rand(Sq, Skv, generator=gen, device=dev) > 0.2
        kw = {"attn_mask": m, "is_causal": True, "kv_lens": torch.tensor([60, 77], device=dev)}
        feats = {"bool_mask", "causal", "kv_lens"}
    return q, k, v, kw, feats


CASES = ["plain", "odd", "gqa", "causal", "causal_rect", "kv_lens", "kv_lens_zero", "q_lens",
         "scale", "bool_mask", "additive_mask", "mask_causal_kv"]


@pytest.mark.parametrize("lse", [False, True], ids=["out", "lse"])
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("kname", ATTN_KERNELS)
def test_attention_kernel_matches_reference(cuda, kname, dtype_name, lse):
    from phyx.errors import UnsupportedArgumentError
    from phyx.ops import reference

    kern = _kernel("attention", kname)
    dtype = DTYPES[dtype_name]
    gen = torch.Generator(device="cuda").manual_seed(1234)
    ran, refused = [], []
    for case in CASES:
        q, k, v, kw, feats = _case(case, dtype, gen)
        if lse:
            feats = feats | {"lse"}
        declared = dtype in kern.support.dtypes and feats <= kern.support.features
        try:
            got = kern.fn(q, k, v, kw.get("attn_mask"), kw.get("kv_lens"), kw.get("q_lens"),
                          kw.get("is_causal", False), kw.get("scale"), lse)
        except UnsupportedArgumentError as e:
            # a declared-unsupported argument must be refused. Beyond that only two refusals
            # are allowed, and never by the catch-all 'sdpa': cuDNN refusing inputs torch has
            # no cuDNN kernel for, and flash kernels refusing top-left causal with Sq != Skv
            allowed = kname == "sdpa.cudnn" or (case == "causal_rect" and "flash" in kname
                                                and kname not in RUN_EVERYTHING)
            assert not declared or allowed, f"{kname} refused {case}: {e}"
            refused.append(case)
            continue
        assert declared, f"{kname} accepted {case} ({dtype_name}) though it declares no support"
        want = reference.attention(q.double(), k.double(), v.double(), kw.get("attn_mask"),
                                   kv_lens=kw.get("kv_lens"), q_lens=kw.get("q_lens"),
                                   is_causal=kw.get("is_causal", False), scale=kw.get("scale"),
                                   return_lse=lse)
        out, ref_out = (got[0], want[0]) if lse else (got, want)
        assert out.shape == ref_out.shape and out.dtype == dtype, (case, out.shape, out.dtype)
        assert torch.isfinite(out).all(), f"{kname} {case}: non-finite output"
        err = rel_l2(out.float(), ref_out)
        assert err < REL_TOL[dtype], f"{kname} {case} {dtype_name}: rel L2 {err:.2e}"
        if lse:
            g, w = got[1].float(), want[1]
            assert g.shape == w.shape, (case, g.shape, w.shape)
            fin = torch.isfinite(w)
            assert torch.equal(torch.isfinite(g), fin), f"{kname} {case}: lse -inf rows differ"
            assert (g[fin] - w[fin]).abs().max().item() < 2e-2, f"{kname} {case}: lse differs"
        ran.append(case)
    if kname in RUN_EVERYTHING:
        assert not refused, f"{kname!r} must run every case, refused {refused}"
    if dtype in kern.support.dtypes and kname != "sdpa.cudnn":
        assert ran, f"{kname} ran no case at all in {dtype_name}"
    if dtype not in kern.support.dtypes:
        assert not ran, f"{kname} ran {ran} in {dtype_name}, a dtype it does not declare"


@pytest.mark.parametrize("dtype_name", ["bf16", "fp16"])
def test_cudnn_runs_a_video_model_shape(cuda, dtype_name):
    """cuDNN refuses many small shapes; at the shapes that matter it must run and agree."""
    from phyx.ops import reference

    kern = _kernel("attention", "sdpa.cudnn")
    dt = DTYPES[dtype_name]
    q, k, v = (torch.randn(1, 1024, 8, 128, device="cuda", dtype=dt) for _ in range(3))
    got = kern.fn(q, k, v, None, None, None, False, None, False)
    want = reference.attention(q.double(), k.double(), v.double())
    assert rel_l2(got.float(), want) < REL_TOL[dt]


def test_flash_kernels_refuse_masks_and_bottom_right_causal(cuda):
    from phyx.errors import UnsupportedArgumentError

    for name in ("sdpa.flash", "flash_attn2", "flash_attn3", "flash_attn4"):
        try:
            kern = _kernel("attention", name)
        except pytest.skip.Exception:
            continue
        q = torch.randn(1, 16, 2, 64, device="cuda", dtype=torch.bfloat16)
        m = torch.ones(16, 16, dtype=torch.bool, device="cuda")
        with pytest.raises(UnsupportedArgumentError, match="mask"):
            kern.fn(q, q, q, m, None, None, False, None, False)
        if name != "sdpa.flash":
            k = torch.randn(1, 24, 2, 64, device="cuda", dtype=torch.bfloat16)
            with pytest.raises(UnsupportedArgumentError, match="causal"):
                kern.fn(q, k, k, None, None, None, True, None, False)


def _expected_fast_attention():
    from phyx_cuda.attention import FA4_MEASURED_FASTER, fa4_installed

    measured = tuple(torch.cuda.get_device_capability()) in FA4_MEASURED_FASTER
    return "flash_attn4_or_sdpa" if fa4_installed() and measured else "sdpa"


def test_policy_fast_picks_the_measured_fastest_and_lse_works_through_phyx_ops(cuda):
    import phyx.ops as ops

    assert ops.chosen_kernel("attention").name == _expected_fast_attention()
    q = torch.randn(1, 300, 8, 128, device="cuda", dtype=torch.bfloat16)
    out, lse = ops.attention(q, q, q, return_lse=True)
    want, wlse = ops.reference.attention(q.float(), q.float(), q.float(), return_lse=True)
    assert rel_l2(out.float(), want) < 2e-2
    assert (lse - wlse).abs().max().item() < 2e-2


def test_wan_sized_attention_phyx_equals_direct_sdpa(cuda):
    """phyx.ops.attention adds no arithmetic: at a Wan-like shape it is bitwise the SDPA call."""
    import torch.nn.functional as F

    import phyx.ops as ops

    q, k, v = (torch.randn(1, 4680, 12, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ops.use_kernel("attention", "sdpa")
    try:
        a = ops.attention(q, k, v)
    finally:
        ops.use_kernel("attention", None)
    b = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                       v.transpose(1, 2)).transpose(1, 2)
    assert torch.equal(a, b)


def test_fa4_is_as_accurate_as_sdpa_at_a_wan_shape(cuda):
    """Where FA4 leads (policy 'fast'), it must not cost accuracy: at a Wan-like shape its output
    and gradients are no further from the float64 reference than SDPA's (cuDNN), within 25%."""
    import phyx.ops as ops

    fa4 = _kernel("attention", "flash_attn4")
    sdpa = _kernel("attention", "sdpa")
    g = torch.Generator(device="cuda").manual_seed(7)
    q, k, v, do = (torch.randn(1, 4680, 12, 128, device="cuda", dtype=torch.bfloat16, generator=g)
                   for _ in range(4))
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    want = ops.reference.attention(q64, k64, v64)
    want.backward(do.double())
    errs = {}
    for kern in (fa4, sdpa):
        qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
        out = kern.fn(qg, kg, vg, None, None, None, False, None, False)
        out.backward(do)
        errs[kern.name] = [rel_l2(a.float(), b) for a, b in
                           ((out, want), (qg.grad, q64.grad), (kg.grad, k64.grad), (vg.grad, v64.grad))]
    for e4, es, what in zip(errs["flash_attn4"], errs["sdpa"], ("out", "dq", "dk", "dv")):
        assert e4 <= 1.25 * es + 1e-6, f"{what}: FA4 rel L2 {e4:.2e} vs SDPA {es:.2e}"


# ------------------------------------------------------------------ Triton fused ops
def _triton(op):
    from phyx_cuda.kernels import triton_available, triton_kernels

    ok, why = triton_available()
    if not ok:
        pytest.skip(why)
    return next(k for k in triton_kernels(all_ops=True) if k.op == op)


@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_triton_rms_norm_rounding_order(cuda, dtype_name):
    from phyx.ops import reference

    kern = _triton("rms_norm")
    dt = DTYPES[dtype_name]
    for shape in [(2, 77, 1536), (3, 33, 12, 128), (5, 40)]:
        x = torch.randn(shape, device="cuda", dtype=dt) * 3
        w = torch.randn(shape[-1], device="cuda", dtype=dt)
        for weight in (None, w, w.float()):
            got, want = kern.fn(x, weight, 1e-6), reference.rms_norm(x, weight, 1e-6)
            assert got.dtype == want.dtype and got.shape == want.shape
            # only the sum-of-squares order differs: one rounding step of a bf16/fp16 output;
            # in fp32 the rstd difference itself spans a few ulps
            ulp = torch.finfo(want.dtype).eps * want.abs().float().clamp_min(1.0)
            steps = 8.0 if want.dtype == torch.float32 else 1.01
            bad = ((got.float() - want.float()).abs() > ulp * steps).float().mean().item()
            assert bad < 1e-3, f"{shape} {dtype_name}: {bad:.2%} elements beyond 1 ulp"


@pytest.mark.parametrize("style", ["adjacent", "half"])
@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_triton_rope_is_bitwise_eager(cuda, dtype_name, style):
    from phyx.ops import reference

    kern = _triton("rope")
    dt = DTYPES[dtype_name]
    for B, S, N, D in [(1, 77, 12, 128), (2, 5, 3, 64)]:
        x = torch.randn(B, S, N, D, device="cuda", dtype=dt)
        for tshape in [(S, D // 2), (B, S, D // 2)]:
            ang = torch.rand(tshape, device="cuda") * 100
            got = kern.fn(x, ang.cos(), ang.sin(), style)
            want = reference.rope(x, ang.cos(), ang.sin(), style)
            assert torch.equal(got, want), f"{style} {dtype_name} {tshape}: " \
                f"max diff {(got.float() - want.float()).abs().max().item()}"


@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_triton_modulate_is_bitwise_eager(cuda, dtype_name):
    from phyx.ops import reference

    kern = _triton("modulate")
    dt = DTYPES[dtype_name]
    x = torch.randn(2, 129, 1536, device="cuda", dtype=dt)
    for shape, sdt in [((2, 1, 1536), dt), ((2, 129, 1536), dt), ((2, 1, 1536), torch.float32),
                       ((1536,), dt)]:
        shift = torch.randn(shape, device="cuda", dtype=sdt)
        scale = torch.randn(shape, device="cuda", dtype=sdt) * 0.1
        got, want = kern.fn(x, shift, scale), reference.modulate(x, shift, scale)
        assert got.dtype == want.dtype and torch.equal(got, want), (shape, sdt)


def test_triton_gated_residual_is_bitwise_eager(cuda):
    from phyx.ops import reference

    kern = _triton("gated_residual")
    for xdt, ydt, gdt, gshape in [(torch.float32, torch.bfloat16, torch.float32, (2, 1, 1536)),
                                  (torch.bfloat16, torch.bfloat16, torch.bfloat16, (2, 129, 1536)),
                                  (torch.float16, torch.float16, torch.float32, (1536,))]:
        x = torch.randn(2, 129, 1536, device="cuda", dtype=xdt)
        y = torch.randn(2, 129, 1536, device="cuda", dtype=ydt)
        g = torch.randn(gshape, device="cuda", dtype=gdt)
        got, want = kern.fn(x, y, g), reference.gated_residual(x, y, g)
        assert got.dtype == want.dtype and torch.equal(got, want), (xdt, ydt, gdt, gshape)


def test_triton_ops_keep_autograd(cuda):
    """Under autograd the Triton kernels run their own backward: RMSNorm's gradients equal
    eager autograd's to fp32 rounding; RoPE's (the inverse rotation) and modulate's input
    gradient are bitwise eager's on the GPU. Full coverage: tests/backend/test_triton_kernels.py."""
    from phyx.ops import reference

    x = torch.randn(4, 256, device="cuda", requires_grad=True)
    w = torch.randn(256, device="cuda", requires_grad=True)
    _triton("rms_norm").fn(x, w, 1e-6).sum().backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    reference.rms_norm(x, w, 1e-6).sum().backward()
    assert torch.allclose(gx, x.grad, rtol=1e-5, atol=1e-6) and torch.allclose(gw, w.grad, rtol=1e-5, atol=1e-5)

    for style in ("adjacent", "half"):
        xb = torch.randn(2, 77, 12, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        ang = torch.rand(77, 64, device="cuda") * 100
        g = torch.randn(2, 77, 12, 128, device="cuda", dtype=torch.bfloat16)
        _triton("rope").fn(xb, ang.cos(), ang.sin(), style).backward(g)
        got = xb.grad.clone()
        xb.grad = None
        reference.rope(xb, ang.cos(), ang.sin(), style).backward(g)
        assert torch.equal(got, xb.grad), style

    xm = torch.randn(2, 129, 1536, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    shift = torch.randn(2, 1, 1536, device="cuda", requires_grad=True)
    scale = (torch.randn(2, 1, 1536, device="cuda") * 0.1).requires_grad_(True)
    g = torch.randn(2, 129, 1536, device="cuda")
    _triton("modulate").fn(xm, shift, scale).backward(g)
    got = [t.grad.clone() for t in (xm, shift, scale)]
    for t in (xm, shift, scale):
        t.grad = None
    reference.modulate(xm, shift, scale).backward(g)
    assert torch.equal(got[0], xm.grad)
    for a, t in zip(got[1:], (shift, scale)):
        assert torch.allclose(a, t.grad, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ NCCL
from phyx.testing import free_port as _free_port  # noqa: E402


def test_nccl_world_size_one(cuda, monkeypatch):
    import torch.distributed as dist

    from phyx import comm

    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(k, v)
    assert cuda.dist_backend == "nccl"
    rank, world, local = comm.init_distributed(timeout_s=60)
    try:
        assert (rank, world, local) == (0, 1, 0)
        assert dist.get_backend() == "nccl"
        t = torch.arange(8.0, device="cuda")
        dist.all_reduce(t)  # a real NCCL launch, not the size-1 shortcut of phyx.comm
        torch.cuda.synchronize()
        assert torch.equal(t, torch.arange(8.0, device="cuda"))
        assert os.environ.get("TORCH_NCCL_ASYNC_ERROR_HANDLING") == "1"
    finally:
        comm.destroy()
