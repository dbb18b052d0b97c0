"""Opt-in: torch.nn.functional.scaled_dot_product_attention -> phyx.ops.attention.

Upstream DiTs whose attention is plain SDPA make no phyx call at all, so on npu-emulated they
exercise nothing of the NPU path (and on a real NPU they take torch_npu's own SDPA). Inside
`phyx_patches.scope(["sdpa", ...])` SDPA calls go through the backend's attention kernel:
[B, N, S, D] is transposed to phyx's [B, S, N, D]; bool / additive masks, is_causal (top-left,
as SDPA), scale and GQA are passed on; attention dropout is refused. Calls made from inside a
phyx kernel (the CPU backend's own SDPA kernel) go to torch's SDPA."""
from __future__ import annotations

import threading

import torch

from phyx.errors import UnsupportedArgumentError

_REAL = torch.nn.functional.scaled_dot_product_attention
_inside = threading.local()


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False):
    if getattr(_inside, "on", False) or query.dim() not in (3, 4):
        return _REAL(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                     is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
    if dropout_p:
        raise UnsupportedArgumentError(
            f"phyx_patches sdpa shim: dropout_p={dropout_p} is not supported (phyx.ops.attention "
            f"has no attention dropout); run in eval mode or leave 'sdpa' out of the shims")
    if key.shape[-3] != query.shape[-3] and not enable_gqa and query.dim() == 4:
        raise UnsupportedArgumentError(
            f"phyx_patches sdpa shim: {query.shape[-3]} query heads and {key.shape[-3]} key heads "
            f"need enable_gqa=True (as torch's SDPA does)")
    import phyx.ops

    squeeze = query.dim() == 3
    q, k, v = ((t.unsqueeze(0) if squeeze else t).transpose(1, 2) for t in (query, key, value))
    m = attn_mask
    if m is not None and squeeze:
        m = m.unsqueeze(0)
    _inside.on = True
    try:
        out = phyx.ops.attention(q, k, v, m, is_causal=is_causal, scale=scale)
    finally:
        _inside.on = False
    out = out.transpose(1, 2)
    return out.squeeze(0) if squeeze else out


def install(layer) -> None:
    layer.set_attr(torch.nn.functional, "scaled_dot_product_attention", scaled_dot_product_attention)
