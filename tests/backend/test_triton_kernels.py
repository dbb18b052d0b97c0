"""The CUDA backend's Triton kernels, forward and backward, against the eager reference and its
autograd. On a GPU they run compiled; without one, through Triton's interpreter
(TRITON_INTERPRET=1, set in conftest.py before triton is imported), so CI checks them too.

The interpreter computes with numpy, whose rounding is not the GPU's, so the bar here is one
rounding step of the output dtype; tests/backend/test_cuda_backend.py adds the bitwise checks on a GPU.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.utils.checkpoint as ckpt

from phyx.testing import rel_l2

pytest.importorskip("triton")

from phyx.ops import reference  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
if DEV == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not 1: Triton kernels cannot run here",
                allow_module_level=True)


@pytest.fixture(scope="module")
def T():
    import phyx_cuda.triton_ops as mod

    return mod


@pytest.fixture(autouse=True)
def _on_device():
    with torch.device(DEV):
        yield


def _run(fn, *inputs, seed=1):
    """fn(*inputs) and the gradients of a fixed random projection of it w.r.t. every input."""
    leaves = [t.detach().clone().requires_grad_(True) if isinstance(t, torch.Tensor) else t
              for t in inputs]
    out = fn(*leaves)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), device="cpu")
    g = g.to(device=out.device, dtype=out.dtype)
    out.backward(g)
    return out.detach(), [t.grad for t in leaves if isinstance(t, torch.Tensor)]




def _within_one_rounding(got, want, rounded_in=None, roundings=3):
    """A few units in the last place: fp32 reductions differ in order (rstd moves by ulps), and
    the interpreter converts fp32 to bf16 by truncation (1 + 2^-8 + 2^-10 becomes 1.0, not the
    nearest 1.0078125), so each rounding of a chain may lose up to one ulp there; on the GPU it
    rounds to nearest (bitwise equality of rope, modulate and the gated residual is asserted in
    test_cuda_backend.py)."""
    dt = rounded_in or want.dtype  # the narrowest dtype the computation rounds through
    steps = 8 if dt == torch.float32 else ((1 if roundings <= 3 else 2) if DEV == "cuda" else roundings + 1)
    ulp = torch.finfo(dt).eps * want.float().abs().clamp_min(1.0)
    return bool(((got.float() - want.float()).abs() <= steps * ulp).all())


# a bf16 gradient differs from eager's by bf16 rounding of intermediate products (eager rounds
# g * w to bf16 before the rest; the kernel keeps fp32): relative L2 well under 1e-2
GRAD_TOL = {torch.float32: 1e-5, torch.bfloat16: 1.5e-2, torch.float16: 2e-3}
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("wdt", ["none", "same", "fp32"])
def test_rms_norm_forward_and_backward_match_eager(T, monkeypatch, dtype, wdt):
    # few programs, so each walks several rows and the last chunk is partial
    monkeypatch.setattr(T, "_BWD_PROGRAMS", 4)
    monkeypatch.setattr(T, "_BWD_PARTIAL_ELEMS", 0)
    x = torch.randn(3, 7, 96, dtype=dtype) * 2
    w = None if wdt == "none" else torch.randn(96, dtype=dtype if wdt == "same" else torch.float32)
    args = (x,) if w is None else (x, w)
    got, ggot = _run(lambda *a: T.rms_norm(*a, eps=1e-6) if len(a) == 2 else T.rms_norm(a[0], None, 1e-6), *args)
    want, gwant = _run(lambda *a: reference.rms_norm(*a, eps=1e-6) if len(a) == 2
                       else reference.rms_norm(a[0], None, 1e-6), *args)
    # the normalised x is rounded to x.dtype before the weight, whatever the output dtype
    assert got.dtype == want.dtype and _within_one_rounding(got, want, rounded_in=dtype)
    for name, a, b in zip(("x", "weight"), ggot, gwant):
        assert a.dtype == b.dtype, name
        assert rel_l2(a, b) < GRAD_TOL[dtype], f"grad {name}: rel L2 {rel_l2(a, b):.2e}"


def test_rms_norm_backward_is_the_kernel_not_eager(T, monkeypatch):
    """Under autograd the Triton path runs (it would be easy to fall back to eager silently)."""
    calls = []
    monkeypatch.setattr(T.reference, "rms_norm", lambda *a, **k: calls.append(1))
    x = torch.randn(5, 64, requires_grad=True)
    w = torch.randn(64, requires_grad=True)
    T.rms_norm(x, w, 1e-6).sum().backward()
    assert not calls and x.grad is not None and w.grad is not None


@pytest.mark.parametrize("style", ["adjacent", "half"])
@pytest.mark.parametrize("table_dims", [2, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rope_backward_is_the_inverse_rotation(T, style, table_dims, dtype):
    B, S, N, D = 2, 6, 3, 32
    x = torch.randn(B, S, N, D, dtype=dtype)
    ang = torch.rand((S, D // 2) if table_dims == 2 else (B, S, D // 2)) * 50
    cos, sin = ang.cos(), ang.sin()
    got, (gx,) = _run(lambda t: T.rope(t, cos, sin, style), x)
    want, (gx_ref,) = _run(lambda t: reference.rope(t, cos, sin, style), x)
    assert _within_one_rounding(got, want)
    assert gx.dtype == gx_ref.dtype and _within_one_rounding(gx, gx_ref)


def test_rope_tables_that_need_grad_run_the_reference(T):
    """Only x gets a gradient from the kernel; learnable tables get theirs from eager autograd."""
    x = torch.randn(1, 4, 2, 8)
    ang = (torch.rand(4, 4) * 3).requires_grad_(True)
    T.rope(x, ang.cos(), ang.sin(), "half").square().sum().backward()
    assert ang.grad is not None and ang.grad.abs().sum() > 0


def _assert_kernel_matches_eager(kernel, eager, args, names, dtype):
    """Output within one rounding of eager's, and each gradient's shape, dtype and value."""
    got, grads = _run(kernel, *args)
    want, grads_ref = _run(eager, *args)
    assert got.dtype == want.dtype and _within_one_rounding(got, want)
    for name, a, b in zip(names, grads, grads_ref):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert rel_l2(a, b) < GRAD_TOL[dtype], f"grad {name}: rel L2 {rel_l2(a, b):.2e}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mod_shape,mod_fp32", [((2, 1, 40), True), ((2, 7, 40), False),
                                                ((40,), False), ((2, 1, 40), False)])
def test_modulate_backward_matches_eager(T, dtype, mod_shape, mod_fp32):
    x = torch.randn(2, 7, 40, dtype=dtype)
    mdt = torch.float32 if mod_fp32 else dtype
    shift = torch.randn(mod_shape, dtype=mdt)
    scale = torch.randn(mod_shape, dtype=mdt) * 0.1
    _assert_kernel_matches_eager(T.modulate, reference.modulate, (x, shift, scale),
                                 ("x", "shift", "scale"), dtype)


def test_checkpointed_block_recomputes_through_the_kernels(T):
    """A Wan-like chain (RMSNorm -> RoPE -> modulate) under activation checkpointing gives the
    gradients of the plain eager chain: the recompute and the custom backwards compose."""
    C, N, D = 64, 4, 16
    x = torch.randn(2, 5, C)
    w = torch.randn(C)
    ang = torch.rand(5, D // 2) * 10
    shift, scale = torch.randn(2, 1, C), torch.randn(2, 1, C) * 0.1

    def chain(ops, x, w, shift, scale):
        h = ops.rms_norm(x, w, 1e-6).unflatten(-1, (N, D))
        h = ops.rope(h, ang.cos(), ang.sin(), "adjacent").flatten(-2)
        return ops.modulate(h, shift, scale)

    got, g1 = _run(lambda *a: ckpt.checkpoint(chain, T, *a, use_reentrant=False), x, w, shift, scale)
    want, g2 = _run(lambda *a: chain(reference, *a), x, w, shift, scale)
    assert rel_l2(got, want) < 1e-6
    for a, b in zip(g1, g2):
        assert rel_l2(a, b) < 1e-5


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("gate_shape,x_fp32", [((2, 1, 40), True), ((2, 7, 40), True),
                                               ((40,), False), ((2, 1, 40), False)])
def test_gated_residual_forward_and_backward_match_eager(T, dtype, gate_shape, x_fp32):
    """Wan's mix (fp32 residual, branch in dtype, fp32 gate) and the all-one-dtype case."""
    x = torch.randn(2, 7, 40, dtype=torch.float32 if x_fp32 else dtype)
    y = torch.randn(2, 7, 40, dtype=dtype)
    gate = torch.randn(gate_shape, dtype=torch.float32 if x_fp32 else dtype)
    _assert_kernel_matches_eager(T.gated_residual, reference.gated_residual, (x, y, gate),
                                 ("x", "y", "gate"), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mod_shape,mod_fp32,out", [((2, 1, 96), True, "bf16"), ((2, 7, 96), False, None),
                                                    ((96,), False, None), ((2, 1, 96), True, None)])
def test_norm_modulate_forward_and_backward_match_eager(T, dtype, mod_shape, mod_fp32, out):
    """adaLN in one kernel (Wan: fp32 x and modulation, bf16 out; Predict2: all in dtype)."""
    x = torch.randn(2, 7, 96, dtype=torch.float32 if mod_fp32 else dtype) * 3 + 1
    mdt = torch.float32 if mod_fp32 else dtype
    shift = torch.randn(mod_shape, dtype=mdt)
    scale = torch.randn(mod_shape, dtype=mdt) * 0.1
    out_dtype = torch.bfloat16 if out == "bf16" else None
    got, grads = _run(lambda *a: T.norm_modulate(*a, 1e-6, out_dtype), x, shift, scale)
    want, grads_ref = _run(lambda *a: reference.norm_modulate(*a, 1e-6, out_dtype), x, shift, scale)
    # LayerNorm statistics differ in summation order: a rounding step of the narrowest dtype
    narrow = out_dtype or (dtype if not mod_fp32 else torch.float32)
    # four roundings: the LayerNorm output, 1 + scale, the product, the sum (and the cast)
    assert got.dtype == want.dtype and _within_one_rounding(got, want, rounded_in=narrow, roundings=5)
    for name, a, b in zip(("x", "shift", "scale"), grads, grads_ref):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        tol = GRAD_TOL[narrow] if narrow != torch.float32 else 1e-5
        assert rel_l2(a, b) < tol, f"grad {name}: rel L2 {rel_l2(a, b):.2e}"
