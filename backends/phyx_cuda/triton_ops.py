"""Triton fused kernels for RMSNorm, RoPE (adjacent and half) and modulate.

Each keeps the reference's rounding order (phyx/ops/reference.py), so results match eager torch
on the same device:
- rms_norm: sum of squares and rsqrt in fp32, round to x.dtype, then * weight in the promoted
  dtype (upstream Wan's order). Only the reduction order differs from eager.
- rope: fp32 products, FMA contraction off (eager rounds each product), result in x.dtype:
  bit-identical to eager.
- modulate: (1 + scale), x * that, + shift, each rounded to the dtype torch would promote to:
  bit-identical to eager, in one pass instead of three.
Under autograd each op is a torch.autograd.Function with its own backward, so the training step
(forward, checkpoint recompute and backward) runs fused kernels too:
- rms_norm: a Triton backward kernel (per-row rstd saved by the forward; the weight gradient
  accumulated in fp32 per program, then summed);
- rope: the inverse rotation, i.e. the same kernel with sin negated (exact: only a sign flips);
  only the cos/sin tables are saved, not the activations;
- modulate: the forward kernel, and a backward in torch ops with eager's roundings.
Gradients with respect to the RoPE tables are not computed here: tables that require grad run
the eager reference. Shapes a kernel does not cover also run the reference: the op's meaning
never changes, only which code computes it.
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
def _rms_norm_kernel(X, W, Y, RSTD, n_rows, n_cols, stride_x, stride_y, eps,
                     HAS_W: tl.constexpr, SAVE_RSTD: tl.constexpr, ROWS: tl.constexpr,
                     BLOCK: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK)
    m = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=m, other=0.0).to(tl.float32)
    rstd = tl.math.rsqrt(tl.sum(x * x, axis=1) / n_cols + eps)
    if SAVE_RSTD:
        tl.store(RSTD + rows, rstd, mask=rows < n_rows)
    y = (x * rstd[:, None]).to(X.dtype.element_ty)  # round to x.dtype before the weight
    if HAS_W:
        w = tl.load(W + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        out = (y.to(tl.float32) * w[None, :]).to(Y.dtype.element_ty)
    else:
        out = y
    tl.store(Y + rows[:, None] * stride_y + cols[None, :], out, mask=m)


@triton.jit
def _rms_norm_bwd_kernel(X, W, GY, RSTD, GX, GW_PART, n_rows, n_cols, stride_x, stride_gy, stride_gx,
                         HAS_W: tl.constexpr, ROWS_PER_PROG: tl.constexpr, BLOCK: tl.constexpr):
    # One program walks a chunk of rows; the weight gradient stays in fp32 registers and is
    # written once per program (summed over programs on the host).
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    cm = cols < n_cols
    if HAS_W:
        w = tl.load(W + cols, mask=cm, other=0.0).to(tl.float32)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(0, ROWS_PER_PROG):
        row = pid * ROWS_PER_PROG + i
        rm = cm & ((row + tl.zeros([BLOCK], dtype=tl.int32)) < n_rows)  # a block mask, not scalar & block
        x = tl.load(X + row * stride_x + cols, mask=rm, other=0.0).to(tl.float32)
        g = tl.load(GY + row * stride_gy + cols, mask=rm, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row, mask=row < n_rows, other=0.0)
        xhat = x * rstd
        if HAS_W:
            # forward: out = round(xhat) * w, so d out / d w = round(xhat)
            acc += g * xhat.to(X.dtype.element_ty).to(tl.float32)
            g = g * w
        dot = tl.sum(g * xhat, axis=0) / n_cols
        gx = (g - xhat * dot) * rstd
        tl.store(GX + row * stride_gx + cols, gx.to(GX.dtype.element_ty), mask=rm)
    if HAS_W:
        tl.store(GW_PART + pid * n_cols + cols, acc, mask=cm)


_MAX_RMS_COLS = 16384
# Backward spreads the rows over at least _BWD_PROGRAMS programs, more for narrow rows (up to
# _BWD_PARTIAL_ELEMS fp32 partial weight-gradient values): with per-head norms (128 wide, a
# million rows) 1024 programs each walking a thousand rows left the GPU latency-bound.
_BWD_PROGRAMS = 1024
_BWD_PARTIAL_ELEMS = 1 << 22


def _rms_norm_launch(x2, weight, eps, out_dtype, save_rstd):
    n = x2.shape[-1]
    y = torch.empty(x2.shape, dtype=out_dtype, device=x2.device)
    rstd = torch.empty(x2.shape[0], dtype=torch.float32, device=x2.device) if save_rstd else y
    block = triton.next_power_of_2(n)
    rows = max(1, min(64, 4096 // block))
    grid = (triton.cdiv(x2.shape[0], rows),)
    _rms_norm_kernel[grid](x2, weight if weight is not None else x2, y, rstd, x2.shape[0], n,
                           x2.stride(0), y.stride(0), eps, HAS_W=weight is not None,
                           SAVE_RSTD=save_rstd, ROWS=rows, BLOCK=block,
                           num_warps=4 if block * rows <= 4096 else 8)
    return y, (rstd if save_rstd else None)


class _RMSNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2, weight, eps, out_dtype):
        y, rstd = _rms_norm_launch(x2, weight, eps, out_dtype, save_rstd=True)
        ctx.save_for_backward(x2, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, gy):
        x2, weight, rstd = ctx.saved_tensors
        gy = gy if gy.stride(-1) == 1 else gy.contiguous()
        n_rows, n = x2.shape
        gx = torch.empty_like(x2)
        target = max(_BWD_PROGRAMS, _BWD_PARTIAL_ELEMS // n)
        per_prog = triton.next_power_of_2(triton.cdiv(n_rows, target))  # few compiled variants
        n_prog = triton.cdiv(n_rows, per_prog)
        has_w = weight is not None
        gw_part = torch.empty((n_prog, n), dtype=torch.float32, device=x2.device) if has_w else gx
        block = triton.next_power_of_2(n)
        _rms_norm_bwd_kernel[(n_prog,)](x2, weight if has_w else x2, gy, rstd, gx, gw_part, n_rows, n,
                                        x2.stride(0), gy.stride(0), gx.stride(0), HAS_W=has_w,
                                        ROWS_PER_PROG=per_prog, BLOCK=block, num_warps=4 if block <= 2048 else 8)
        gw = gw_part.sum(0).to(weight.dtype) if has_w and ctx.needs_input_grad[1] else None
        return gx, gw, None, None


def rms_norm(x, weight=None, eps=1e-6):
    n = x.shape[-1]
    if (x.dtype not in _TL or n > _MAX_RMS_COLS or x.numel() == 0
            or (weight is not None and (weight.shape != (n,) or weight.dtype not in _TL))):
        return reference.rms_norm(x, weight, eps)
    x2 = x.reshape(-1, n)
    if x2.stride(-1) != 1 or (x2.shape[0] > 1 and x2.stride(0) != n):
        x2 = x2.contiguous()
    out_dtype = x.dtype if weight is None else torch.promote_types(x.dtype, weight.dtype)
    if _needs_grad(x, weight):
        return _RMSNormFn.apply(x2, weight, eps, out_dtype).view(x.shape)
    return _rms_norm_launch(x2, weight, eps, out_dtype, save_rstd=False)[0].view(x.shape)


# --------------------------------------------------------------------------- RoPE
@triton.jit
def _rope_kernel(X, COS, SIN, Y, S, H, D2, sxb, sxs, sxh, syb, sys, syh, scb, scs,
                 HALF: tl.constexpr, INVERSE: tl.constexpr, BLOCK_H: tl.constexpr,
                 BLOCK_D2: tl.constexpr):
    pid = tl.program_id(0)
    b = pid // S
    s = pid % S
    h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    j = tl.arange(0, BLOCK_D2)
    jm = j < D2
    c = tl.load(COS + b * scb + s * scs + j, mask=jm, other=0.0)[None, :]
    sn = tl.load(SIN + b * scb + s * scs + j, mask=jm, other=0.0)[None, :]
    if INVERSE:  # rotation by -angle: the gradient of a rotation (negation is exact)
        sn = -sn
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
        # adjacent pairs: one contiguous load of each head's D values, split into (even, odd)
        # lanes in registers, rotated, joined back and stored contiguously. Same products and
        # roundings as eager (FMA contraction off), so bit for bit eager's result. (A first
        # version loaded the partner x[d ^ 1] a second time: 20% of copy bandwidth.)
        d = tl.arange(0, 2 * BLOCK_D2)
        dm = (h[:, None] < H) & (d[None, :] < 2 * D2)
        xv = tl.load(xb + d[None, :], mask=dm, other=0.0).to(tl.float32)
        x_even, x_odd = tl.split(tl.reshape(xv, [BLOCK_H, BLOCK_D2, 2]))
        o_even = x_even * c - x_odd * sn
        o_odd = x_even * sn + x_odd * c
        out = tl.reshape(tl.join(o_even, o_odd), [BLOCK_H, 2 * BLOCK_D2])
        tl.store(yb + d[None, :], out.to(Y.dtype.element_ty), mask=dm)


def _rope_launch(x, c, s, style, inverse):
    B, S, H, D = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    if c.dim() == 2:
        scb, scs = 0, c.stride(0)
    else:
        scb, scs = c.stride(0), c.stride(1)
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    d2 = D // 2
    block_d2 = triton.next_power_of_2(d2)
    block_h = max(1, min(triton.next_power_of_2(H), 4096 // block_d2))
    grid = (B * S, triton.cdiv(H, block_h))
    _rope_kernel[grid](x, c, s, y, S, H, d2, x.stride(0), x.stride(1), x.stride(2),
                       y.stride(0), y.stride(1), y.stride(2), scb, scs,
                       HALF=style == "half", INVERSE=inverse, BLOCK_H=block_h, BLOCK_D2=block_d2,
                       num_warps=8 if block_h * block_d2 >= 2048 else 4, enable_fp_fusion=False)
    return y


class _RopeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, c, s, style):
        ctx.save_for_backward(c, s)
        ctx.style = style
        return _rope_launch(x, c, s, style, inverse=False)

    @staticmethod
    def backward(ctx, gy):
        c, s = ctx.saved_tensors
        return _rope_launch(gy, c, s, ctx.style, inverse=True), None, None, None


def rope(x, cos, sin, style="adjacent"):
    if style not in ("adjacent", "half"):
        raise ValueError(f"rope style must be 'adjacent' or 'half', got {style!r}")
    if (x.dtype not in _TL or cos.dtype != torch.float32 or sin.dtype != torch.float32
            or x.numel() == 0 or (cos.dim() == 3 and cos.shape[0] != x.shape[0])
            or (torch.is_grad_enabled() and (cos.requires_grad or sin.requires_grad))):
        return reference.rope(x, cos, sin, style)
    c, s = cos.contiguous(), sin.contiguous()
    if _needs_grad(x):
        return _RopeFn.apply(x, c, s, style)
    return _rope_launch(x, c, s, style, inverse=False)


# --------------------------------------------------------------------------- modulate
@triton.jit
def _load_bl(PTR, b, l, col, sb, sl, sc, m):
    """A [ROWS, cols] tile of a [B, L, C] operand read by strides (0 where it broadcasts)."""
    return tl.load(PTR + b[:, None] * sb + l[:, None] * sl + col[None, :] * sc, mask=m, other=0.0)


def _fits_rowwise(x, *others) -> bool:
    """x [N, C] or [B, L, C] in a Triton dtype, and every other operand a tensor in a Triton dtype
    that broadcasts to x's shape. Anything else runs the reference (which raises torch's own
    message for shapes that do not broadcast at all)."""
    if x.dim() not in (2, 3) or x.numel() == 0 or x.dtype not in _TL:
        return False
    if any(not isinstance(t, torch.Tensor) or t.dim() == 0 or t.dtype not in _TL for t in others):
        return False
    try:
        return torch.broadcast_shapes(x.shape, *(t.shape for t in others)) == x.shape
    except RuntimeError:
        return False


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
    x = _load_bl(X, b, l, col, sxb, sxl, sxc, m)
    sc = _load_bl(SCALE, b, l, col, scb, scl, scc, m)
    sh = _load_bl(SHIFT, b, l, col, shb, shl, shc, m)
    # eager rounds after each op to the promoted dtype: (1 + scale) in T1, x * that in T2,
    # + shift in the output dtype
    t1 = (1.0 + sc.to(tl.float32)).to(T1)
    t2 = (x.to(tl.float32) * t1.to(tl.float32)).to(T2)
    out = t2.to(tl.float32) + sh.to(tl.float32)
    tl.store(Y + r[:, None] * C + col[None, :], out.to(Y.dtype.element_ty), mask=m)


def _modulate_launch(x, shift, scale, out_dtype, t2_dtype):
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


class _ModulateFn(torch.autograd.Function):
    """Backward with eager's roundings: out = round_T2(x * round_T1(1 + scale)) + shift."""

    @staticmethod
    def forward(ctx, x, shift, scale, out_dtype, t2_dtype):
        ctx.save_for_backward(x, scale)
        ctx.shift_meta = (shift.shape, shift.dtype)
        ctx.t2_dtype = t2_dtype
        return _modulate_launch(x, shift, scale, out_dtype, t2_dtype)

    @staticmethod
    def backward(ctx, g):
        x, scale = ctx.saved_tensors
        shift_shape, shift_dtype = ctx.shift_meta
        need_x, need_shift, need_scale = ctx.needs_input_grad[:3]
        g2 = g.to(ctx.t2_dtype)
        gx = (g2 * (1 + scale)).to(x.dtype) if need_x else None
        gscale = (g2 * x).sum_to_size(scale.shape).to(scale.dtype) if need_scale else None
        gshift = g.sum_to_size(shift_shape).to(shift_dtype) if need_shift else None
        return gx, gshift, gscale, None, None


def modulate(x, shift, scale):
    if not _fits_rowwise(x, shift, scale):
        return reference.modulate(x, shift, scale)
    t2_dtype = torch.promote_types(x.dtype, scale.dtype)
    out_dtype = torch.promote_types(t2_dtype, shift.dtype)
    if _needs_grad(x, shift, scale):
        return _ModulateFn.apply(x, shift, scale, out_dtype, t2_dtype)
    return _modulate_launch(x, shift, scale, out_dtype, t2_dtype)


# --------------------------------------------------------------------------- gated residual
@triton.jit
def _gated_residual_kernel(X, YB, G, OUT, n_rows, L, C,
                           sxb, sxl, sxc, syb, syl, syc, sgb, sgl, sgc,
                           T: tl.constexpr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    col = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    b = r // L
    l = r % L
    m = (r[:, None] < n_rows) & (col[None, :] < C)
    x = _load_bl(X, b, l, col, sxb, sxl, sxc, m)
    y = _load_bl(YB, b, l, col, syb, syl, syc, m)
    g = _load_bl(G, b, l, col, sgb, sgl, sgc, m)
    # eager: y * gate rounded to their promoted dtype T, then + x in the output dtype
    t = (y.to(tl.float32) * g.to(tl.float32)).to(T)
    out = x.to(tl.float32) + t.to(tl.float32)
    tl.store(OUT + r[:, None] * C + col[None, :], out.to(OUT.dtype.element_ty), mask=m)


def _gated_residual_launch(x, y, gate, out_dtype, t_dtype):
    x3, y3, g3 = x[None] if x.dim() == 2 else x, y[None] if y.dim() == 2 else y, gate.expand(x.shape)
    if x.dim() == 2:
        g3 = g3[None]
    B, L, C = x3.shape
    out = torch.empty((B, L, C), dtype=out_dtype, device=x.device)
    block_c = min(1024, triton.next_power_of_2(C))
    rows = max(1, 2048 // block_c)
    grid = (triton.cdiv(B * L, rows), triton.cdiv(C, block_c))
    _gated_residual_kernel[grid](x3, y3, g3, out, B * L, L, C, *x3.stride(), *y3.stride(), *g3.stride(),
                                 T=_TL[t_dtype], ROWS=rows, BLOCK_C=block_c, num_warps=4,
                                 enable_fp_fusion=False)
    return out.view(x.shape)


class _GatedResidualFn(torch.autograd.Function):
    """Backward with eager's roundings: out = x + round_T(y * gate)."""

    @staticmethod
    def forward(ctx, x, y, gate, out_dtype, t_dtype):
        ctx.save_for_backward(y, gate)
        ctx.x_dtype, ctx.t_dtype = x.dtype, t_dtype
        return _gated_residual_launch(x, y, gate, out_dtype, t_dtype)

    @staticmethod
    def backward(ctx, g):
        y, gate = ctx.saved_tensors
        need_x, need_y, need_gate = ctx.needs_input_grad[:3]
        gt = g.to(ctx.t_dtype)
        gx = g.to(ctx.x_dtype) if need_x else None
        gy = (gt * gate).to(y.dtype) if need_y else None
        ggate = (gt * y).sum_to_size(gate.shape).to(gate.dtype) if need_gate else None
        return gx, gy, ggate, None, None


def gated_residual(x, y, gate):
    if not _fits_rowwise(x, y, gate) or y.shape != x.shape:
        return reference.gated_residual(x, y, gate)
    t_dtype = torch.promote_types(y.dtype, gate.dtype)
    out_dtype = torch.promote_types(x.dtype, t_dtype)
    if _needs_grad(x, y, gate):
        return _GatedResidualFn.apply(x, y, gate, out_dtype, t_dtype)
    return _gated_residual_launch(x, y, gate, out_dtype, t_dtype)


# --------------------------------------------------------------------------- norm_modulate (adaLN)
@triton.jit
def _norm_modulate_kernel(X, SHIFT, SCALE, Y, MEAN, RSTD, n_rows, L, C, eps,
                          sxr, shb, shl, shc, scb, scl, scc,
                          T1: tl.constexpr, T2: tl.constexpr, SAVE_STATS: tl.constexpr,
                          ROWS: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    col = tl.arange(0, BLOCK)
    b = r // L
    l = r % L
    rm = r < n_rows
    m = rm[:, None] & (col[None, :] < C)
    x = tl.load(X + r[:, None] * sxr + col[None, :], mask=m, other=0.0).to(tl.float32)
    # LayerNorm in fp32 (two-pass in registers), rounded to x.dtype like the reference
    mean = tl.sum(x, axis=1) / C
    xc = tl.where(m, x - mean[:, None], 0.0)
    rstd = tl.math.rsqrt(tl.sum(xc * xc, axis=1) / C + eps)
    if SAVE_STATS:
        tl.store(MEAN + r, mean, mask=rm)
        tl.store(RSTD + r, rstd, mask=rm)
    ln = (xc * rstd[:, None]).to(X.dtype.element_ty).to(tl.float32)
    sc = _load_bl(SCALE, b, l, col, scb, scl, scc, m)
    sh = _load_bl(SHIFT, b, l, col, shb, shl, shc, m)
    # then modulate with eager's roundings (see _modulate_kernel), stored in the output dtype
    t1 = (1.0 + sc.to(tl.float32)).to(T1)
    t2 = (ln * t1.to(tl.float32)).to(T2)
    out = t2.to(tl.float32) + sh.to(tl.float32)
    tl.store(Y + r[:, None] * C + col[None, :], out.to(Y.dtype.element_ty), mask=m)


def _norm_modulate_launch(x3, shift, scale, eps, out_dtype, t2_dtype, save_stats):
    B, L, C = x3.shape
    sh, sc = shift.expand(x3.shape), scale.expand(x3.shape)
    y = torch.empty((B, L, C), dtype=out_dtype, device=x3.device)
    n = B * L
    mean = torch.empty(n, dtype=torch.float32, device=x3.device) if save_stats else y
    rstd = torch.empty(n, dtype=torch.float32, device=x3.device) if save_stats else y
    block = triton.next_power_of_2(C)
    rows = max(1, min(64, 4096 // block))
    _norm_modulate_kernel[(triton.cdiv(n, rows),)](
        x3, sh, sc, y, mean, rstd, n, L, C, eps, x3.stride(1), *sh.stride(), *sc.stride(),
        T1=_TL[scale.dtype], T2=_TL[t2_dtype], SAVE_STATS=save_stats, ROWS=rows, BLOCK=block,
        num_warps=4 if block * rows <= 4096 else 8, enable_fp_fusion=False)
    return y, (mean, rstd) if save_stats else None


class _NormModulateFn(torch.autograd.Function):
    """Backward in torch ops: modulate's gradients with eager's roundings, then aten's LayerNorm
    backward from the saved mean / rstd (the LayerNorm output is recomputed, not stored)."""

    @staticmethod
    def forward(ctx, x3, shift, scale, eps, out_dtype, t2_dtype, mod_dtype):
        y, (mean, rstd) = _norm_modulate_launch(x3, shift, scale, eps, out_dtype, t2_dtype, True)
        ctx.save_for_backward(x3, scale, mean, rstd)
        ctx.shift_meta, ctx.t2_dtype, ctx.mod_dtype = (shift.shape, shift.dtype), t2_dtype, mod_dtype
        return y

    @staticmethod
    def backward(ctx, g):
        x3, scale, mean, rstd = ctx.saved_tensors
        shift_shape, shift_dtype = ctx.shift_meta
        need_x, need_shift, need_scale = ctx.needs_input_grad[:3]
        stats = (*x3.shape[:-1], 1)
        gm = g.to(ctx.mod_dtype)  # through the final cast
        gshift = gm.sum_to_size(shift_shape).to(shift_dtype) if need_shift else None
        g2 = gm.to(ctx.t2_dtype)
        gscale = gx = None
        if need_scale:
            ln = ((x3.float() - mean.view(stats)) * rstd.view(stats)).to(x3.dtype)
            gscale = (g2 * ln).sum_to_size(scale.shape).to(scale.dtype)
        if need_x:
            gln = (g2 * (1 + scale)).to(x3.dtype)
            gx = torch.ops.aten.native_layer_norm_backward(
                gln.float(), x3.float(), [x3.shape[-1]], mean.view(stats), rstd.view(stats),
                None, None, [True, False, False])[0].to(x3.dtype)
        return gx, gshift, gscale, None, None, None, None


_MAX_NORM_COLS = 16384


def norm_modulate(x, shift, scale, eps=1e-6, out_dtype=None):
    if (not _fits_rowwise(x, shift, scale) or x.shape[-1] > _MAX_NORM_COLS
            or (out_dtype is not None and out_dtype not in _TL)):
        return reference.norm_modulate(x, shift, scale, eps, out_dtype)
    t2_dtype = torch.promote_types(x.dtype, scale.dtype)
    mod_dtype = torch.promote_types(t2_dtype, shift.dtype)
    out_dtype = out_dtype or mod_dtype
    x3 = (x if x.dim() == 3 else x[None]).contiguous()
    sh = shift if x.dim() == 3 else shift.expand(x.shape)[None]
    sc = scale if x.dim() == 3 else scale.expand(x.shape)[None]
    if _needs_grad(x, shift, scale):
        y = _NormModulateFn.apply(x3, sh, sc, eps, out_dtype, t2_dtype, mod_dtype)
    else:
        y = _norm_modulate_launch(x3, sh, sc, eps, out_dtype, t2_dtype, False)[0]
    return y.view(x.shape)
