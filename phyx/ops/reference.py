"""Plain-torch reference for every op. The CPU backend runs these; every vendor kernel is
checked against them. They follow the op contract in docs/architecture.md exactly:

attention: q [B, Sq, Nq, D], k/v [B, Skv, Nkv, D]; GQA when Nq % Nkv == 0; attn_mask bool
(True = attend) or additive float, broadcastable to [B, Nq, Sq, Skv]; kv_lens [B] masks keys
>= length; q_lens [B] zeroes outputs of padded queries; is_causal top-left (query i sees
keys j <= i, as torch SDPA); scale None = 1/sqrt(D); fully masked rows give 0 and lse -inf;
return_lse gives lse [B, Nq, Sq] in float32 (natural log).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Query rows per chunk so that one [B, N, chunk, Skv] fp32 score block stays near 256 MB.
_SCORE_BUDGET_ELEMS = 64 * 1024 * 1024


def _acc(t):
    """Compute dtype: fp32 for fp32/bf16/fp16, float64 kept (the parity suite's float64 oracle)."""
    return t if t.dtype == torch.float64 else t.float()


def attention(q, k, v, attn_mask=None, kv_lens=None, q_lens=None, is_causal=False,
              scale=None, return_lse=False):
    B, Sq, Nq, D = q.shape
    Skv, Nkv = k.shape[1], k.shape[2]
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    out_dtype = q.dtype
    qf = _acc(q).transpose(1, 2)  # B N S D
    kf = _acc(k).transpose(1, 2)
    vf = _acc(v).transpose(1, 2)
    if Nq != Nkv:
        rep = Nq // Nkv
        kf = kf.repeat_interleave(rep, dim=1)
        vf = vf.repeat_interleave(rep, dim=1)
    key_idx = torch.arange(Skv, device=q.device)
    key_keep = None
    if kv_lens is not None:
        key_keep = key_idx[None, :] < kv_lens.to(q.device).view(B, 1)  # B Skv
        key_keep = key_keep[:, None, None, :]
    chunk = max(1, min(Sq, _SCORE_BUDGET_ELEMS // max(1, B * Nq * Skv)))
    outs, lses = [], []
    for s0 in range(0, Sq, chunk):
        s1 = min(Sq, s0 + chunk)
        scores = torch.matmul(qf[:, :, s0:s1], kf.transpose(-1, -2)) * scale  # B N c Skv
        keep = key_keep
        if is_causal:
            qi = torch.arange(s0, s1, device=q.device)
            causal = (key_idx[None, :] <= qi[:, None])[None, None]
            keep = causal if keep is None else keep & causal
        if attn_mask is not None:
            m = attn_mask
            if m.dim() < 4:
                m = m.view((1,) * (4 - m.dim()) + tuple(m.shape))
            m = m[..., s0:s1, :] if m.shape[-2] != 1 else m
            if m.dtype == torch.bool:
                keep = m if keep is None else keep & m
            else:
                scores = scores + _acc(m)
        if keep is not None:
            scores = scores.masked_fill(~keep, float("-inf"))
        lse = torch.logsumexp(scores, dim=-1)  # B N c
        finite = torch.isfinite(lse)
        probs = torch.exp(scores - torch.where(finite, lse, torch.zeros_like(lse))[..., None])
        probs = torch.where(finite[..., None], probs, torch.zeros_like(probs))
        outs.append(torch.matmul(probs, vf))
        lses.append(torch.where(finite, lse, torch.full_like(lse, float("-inf"))))
    out = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
    lse = torch.cat(lses, dim=2) if len(lses) > 1 else lses[0]
    if q_lens is not None:
        qkeep = (torch.arange(Sq, device=q.device)[None, :] < q_lens.to(q.device).view(B, 1))
        out = out * qkeep[:, None, :, None]
        lse = lse.masked_fill(~qkeep[:, None, :], float("-inf"))
    out = out.transpose(1, 2).to(out_dtype)
    return (out, lse) if return_lse else out


def rms_norm(x, weight=None, eps=1e-6):
    """Upstream Wan order: normalise in fp32, round to x.dtype, then multiply by weight."""
    xf = _acc(x)
    y = (xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)).to(x.dtype)
    return y * weight if weight is not None else y


def layer_norm(x, weight=None, bias=None, eps=1e-6):
    """Computed in fp32 with the affine in fp32, then rounded (Wan's WanLayerNorm, FP32LayerNorm)."""
    w = _acc(weight) if weight is not None else None
    b = _acc(bias) if bias is not None else None
    return F.layer_norm(_acc(x), (x.shape[-1],), w, b, eps).to(x.dtype)


def _rope_broadcast(t, x):
    # cos/sin: [S, D/2] or [B, S, D/2] -> [B or 1, S, 1, D/2]
    if t.dim() == 2:
        t = t[None]
    return _acc(t[:, :, None, :])


def rope(x, cos, sin, style="adjacent"):
    """Rotate x [B, S, N, D] by per-position angles given as cos/sin [S or B,S, D/2] (fp32).

    style 'adjacent': pairs (2i, 2i+1) as in Wan; 'half': pairs (i, i + D/2) (rotate-half,
    Cosmos-Predict2 and Cosmos3). Applied in fp32, result in x.dtype.
    """
    c = _rope_broadcast(cos, x)
    s = _rope_broadcast(sin, x)
    xf = _acc(x)
    if style == "adjacent":
        x1, x2 = xf[..., 0::2], xf[..., 1::2]
        o1 = x1 * c - x2 * s
        o2 = x1 * s + x2 * c
        out = torch.stack((o1, o2), dim=-1).flatten(-2)
    elif style == "half":
        h = x.shape[-1] // 2
        x1, x2 = xf[..., :h], xf[..., h:]
        out = torch.cat((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1)
    else:
        raise ValueError(f"rope style must be 'adjacent' or 'half', got {style!r}")
    return out.to(x.dtype)


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


def gated_residual(x, y, gate):
    return x + y * gate


def norm_modulate(x, shift, scale, eps=1e-6, out_dtype=None):
    """adaLN: LayerNorm without affine (fp32 inside, rounded to x.dtype), then
    x * (1 + scale) + shift, then cast to out_dtype (None: the dtype torch promotes to)."""
    y = modulate(layer_norm(x, None, None, eps), shift, scale)
    return y if out_dtype is None or y.dtype == out_dtype else y.to(out_dtype)


def gelu(x, approximate="none"):
    # Exact GELU spelled out with erf: torch's native gelu on the NPU ignores `approximate` and
    # computes tanh, so F.gelu(approximate='none') would silently be wrong there.
    if approximate == "none":
        return 0.5 * x * (1.0 + torch.erf(x * 0.7071067811865476))
    return F.gelu(x, approximate="tanh")


def silu(x):
    return F.silu(x)


def swiglu(x):
    """x packed [gate | up] on the last dim -> silu(gate) * up."""
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


def relu2(x):
    return torch.square(F.relu(x))
