"""Triton fused kernels for RMSNorm, RoPE (adjacent and half) and modulate.

Each keeps the reference's rounding order (phyx/ops/reference.py), so results match eager torch
on the same device:
- rms_norm: sum of squares and rsqrt in fp32, round to x.dtype, then * weight in the promoted
  dtype (upstream Wan's order). Only the reduction order differs from eager.
- rope: fp32 products, FMA contraction off (eager rounds each product), result in x.dtype:
  bit-identical to eager.
- modulate: (1 + scale), x * that, + shift, each rounded to the dtype torch would promote to:
  bit-identical to eager, in one pass instead of three.
Forward only: when autograd needs a gradient the wrapper runs the eager reference instead
(the kernels would otherwise cut the graph). Shapes a kernel does not cover also run the
reference: the op's meaning never changes, only which code computes it.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from phyx.ops import reference


def _needs_grad(*ts):
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


_TL = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


# --------------------------------------------------------------------------- RMSNorm
@triton.jit
def _rms_norm_kernel(X, W, Y, n_rows, n_cols, stride_x, stride_y, eps,
                     HAS_W: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK)
    m = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=m, other=0.0).to(tl.float32)
    rstd = tl.math.rsqrt(tl.sum(x * x, axis=1) / n_cols + eps)
    y = (x * rstd[:, None]).to(X.dtype.element_ty)  # round to x.dtype before the weight
    if HAS_W:
        w = tl.load(W + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        out = (y.to(tl.float32) * w[None, :]).to(Y.dtype.element_ty)
    else:
        out = y
    tl.store(Y + rows[:, None] * stride_y + cols[None, :], out, mask=m)


_MAX_RMS_COLS = 16384


def rms_norm(x, weight=None, eps=1e-6):
    n = x.shape[-1]
    if (_needs_grad(x, weight) or x.dtype not in _TL or n > _MAX_RMS_COLS or x.numel() == 0
            or (weight is not None and (weight.shape != (n,) or weight.dtype not in _TL))):
        return reference.rms_norm(x, weight, eps)
    x2 = x.reshape(-1, n)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    out_dtype = x.dtype if weight is None else torch.promote_types(x.dtype, weight.dtype)
    y = torch.empty(x2.shape, dtype=out_dtype, device=x.device)
    block = triton.next_power_of_2(n)
    rows = max(1, min(64, 4096 // block))
    grid = (triton.cdiv(x2.shape[0], rows),)
    _rms_norm_kernel[grid](x2, weight if weight is not None else x2, y, x2.shape[0], n,
                           x2.stride(0), y.stride(0), eps, HAS_W=weight is not None,
                           ROWS=rows, BLOCK=block, num_warps=4 if block * rows <= 4096 else 8)
    return y.view(x.shape)


# --------------------------------------------------------------------------- RoPE
@triton.jit
def _rope_kernel(X, COS, SIN, Y, S, H, D2, sxb, sxs, sxh, syb, sys, syh, scb, scs,
                 HALF: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D2: tl.constexpr):
    pid = tl.program_id(0)
    b = pid // S
    s = pid % S
    h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    j = tl.arange(0, BLOCK_D2)
    jm = j < D2
    c = tl.load(COS + b * scb + s * scs + j, mask=jm, other=0.0)[None, :]
    sn = tl.load(SIN + b * scb + s * scs + j, mask=jm, other=0.0)[None, :]
    m = (h[:, None] < H) & jm[None, :]
    xb = X + b * sxb + s * sxs + h[:, None] * sxh
    yb = Y + b * syb + s * sys + h[:, None] * syh
    if HALF:
        x1 = tl.load(xb + j[None, :], mask=m, other=0.0).to(tl.float32)
        x2 = tl.load(xb + (j + D2)[None, :], mask=m, other=0.0).to(tl.float32)
        o1 = x1 * c - x2 * sn
        o2 = x1 * sn + x2 * c
        tl.store(yb + j[None, :], o1.to(Y.dtype.element_ty), mask=m)
        tl.store(yb + (j + D2)[None, :], o2.to(Y.dtype.element_ty), mask=m)
    else:
        # adjacent pairs, all loads contiguous: out[d] = x[d] * cos[d/2] -+ x[d^1] * sin[d/2]
        # (minus on even d). The partner load x[d^1] hits the lines just read; negation and
        # the order of an addition are exact, so this is eager's arithmetic bit for bit.
        d = tl.arange(0, 2 * BLOCK_D2)
        dm = (h[:, None] < H) & (d[None, :] < 2 * D2)
        half = d // 2
        cf = tl.load(COS + b * scb + s * scs + half, mask=d < 2 * D2, other=0.0)[None, :]
        sf = tl.load(SIN + b * scb + s * scs + half, mask=d < 2 * D2, other=0.0)[None, :]
        xv = tl.load(xb + d[None, :], mask=dm, other=0.0).to(tl.float32)
        xp = tl.load(xb + (d ^ 1)[None, :], mask=dm, other=0.0).to(tl.float32)
        sign = tl.where((d % 2) == 0, -1.0, 1.0)[None, :]
        out = xv * cf + (xp * sf) * sign
        tl.store(yb + d[None, :], out.to(Y.dtype.element_ty), mask=dm)


def rope(x, cos, sin, style="adjacent"):
    if style not in ("adjacent", "half"):
        raise ValueError(f"rope style must be 'adjacent' or 'half', got {style!r}")
    if (_needs_grad(x) or x.dtype not in _TL or cos.dtype != torch.float32
            or sin.dtype != torch.float32 or x.numel() == 0):
        return reference.rope(x, cos, sin, style)
    B, S, H, D = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    c = cos.contiguous()
    s = sin.contiguous()
    if c.dim() == 2:
        scb, scs = 0, c.stride(0)
    else:
        if c.shape[0] != B:
            return reference.rope(x, cos, sin, style)
        scb, scs = c.stride(0), c.stride(1)
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    d2 = D // 2
    block_d2 = triton.next_power_of_2(d2)
    block_h = max(1, min(triton.next_power_of_2(H), 4096 // block_d2))
    grid = (B * S, triton.cdiv(H, block_h))
    _rope_kernel[grid](x, c, s, y, S, H, d2, x.stride(0), x.stride(1), x.stride(2),
                       y.stride(0), y.stride(1), y.stride(2), scb, scs,
                       HALF=style == "half", BLOCK_H=block_h, BLOCK_D2=block_d2,
                       num_warps=8 if block_h * block_d2 >= 2048 else 4, enable_fp_fusion=False)
    return y


# --------------------------------------------------------------------------- modulate
@triton.jit
def _modulate_kernel(X, SHIFT, SCALE, Y, n_rows, L, C,
                     sxb, sxl, sxc, shb, shl, shc, scb, scl, scc,
                     T1: tl.constexpr, T2: tl.constexpr,
                     ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    col = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    b = r // L
    l = r % L
    m = (r[:, None] < n_rows) & (col[None, :] < C)
    x = tl.load(X + b[:, None] * sxb + l[:, None] * sxl + col[None, :] * sxc, mask=m, other=0.0)
    sc = tl.load(SCALE + b[:, None] * scb + l[:, None] * scl + col[None, :] * scc, mask=m, other=0.0)
    sh = tl.load(SHIFT + b[:, None] * shb + l[:, None] * shl + col[None, :] * shc, mask=m, other=0.0)
    # eager rounds after each op to the promoted dtype: (1 + scale) in T1, x * that in T2,
    # + shift in the output dtype
    t1 = (1.0 + sc.to(tl.float32)).to(T1)
    t2 = (x.to(tl.float32) * t1.to(tl.float32)).to(T2)
    out = t2.to(tl.float32) + sh.to(tl.float32)
    tl.store(Y + r[:, None] * C + col[None, :], out.to(Y.dtype.element_ty), mask=m)


def modulate(x, shift, scale):
    if (_needs_grad(x, shift, scale) or not isinstance(shift, torch.Tensor)
            or not isinstance(scale, torch.Tensor) or x.dim() not in (2, 3)
            or shift.dim() == 0 or scale.dim() == 0
            or any(t.dtype not in _TL for t in (x, shift, scale)) or x.numel() == 0):
        return reference.modulate(x, shift, scale)
    t2_dtype = torch.promote_types(x.dtype, scale.dtype)
    out_dtype = torch.promote_types(t2_dtype, shift.dtype)
    try:
        shape = torch.broadcast_shapes(x.shape, shift.shape, scale.shape)
    except RuntimeError:
        return reference.modulate(x, shift, scale)  # let the reference raise torch's message
    if shape != x.shape:
        return reference.modulate(x, shift, scale)
    x3 = x if x.dim() == 3 else x[None]
    sh = shift.expand(x.shape)
    sc = scale.expand(x.shape)
    if x.dim() == 2:
        sh, sc = sh[None], sc[None]
    B, L, C = x3.shape
    y = torch.empty((B, L, C), dtype=out_dtype, device=x.device)
    block_c = min(1024, triton.next_power_of_2(C))
    rows = max(1, 2048 // block_c)
    grid = (triton.cdiv(B * L, rows), triton.cdiv(C, block_c))
    _modulate_kernel[grid](x3, sh, sc, y, B * L, L, C, *x3.stride(), *sh.stride(), *sc.stride(),
                           T1=_TL[scale.dtype], T2=_TL[t2_dtype], ROWS=rows, BLOCK_C=block_c,
                           num_warps=4, enable_fp_fusion=False)
    return y.view(x.shape)
