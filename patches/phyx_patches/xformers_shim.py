"""xformers.ops.memory_efficient_attention served by phyx.ops.attention.

xformers' layout is phyx's ([B, M, H, K]; 3-D [B, M, K] is one head). Attention biases:
None; LowerTriangularMask (causal, top-left as SDPA and phyx); BlockDiagonalMask /
BlockDiagonalCausalMask built with from_seqlens (packed sequences in a batch of 1, as flash-attn
varlen); a tensor (additive, broadcastable to [B, H, Mq, Mk]). Dropout (p > 0), `op=` choices
and other bias types raise UnsupportedArgumentError naming the way out."""
from __future__ import annotations

import torch

from phyx.errors import UnsupportedArgumentError

SERVES = ("ops.memory_efficient_attention (bias: None, LowerTriangularMask, BlockDiagonalMask, "
          "BlockDiagonalCausalMask, tensor)")


def _refuse(what, fix):
    raise UnsupportedArgumentError(f"phyx_patches xformers shim: {what} is not supported; {fix}")


class AttentionBias:
    """Base of the bias types (isinstance checks in upstream code keep working)."""


class LowerTriangularMask(AttentionBias):
    def __init__(self, *args, **kwargs):
        if args or kwargs:
            _refuse("LowerTriangularMask with a tensor bias", "add the bias as a tensor mask")


class BlockDiagonalMask(AttentionBias):
    causal = False

    def __init__(self, q_seqlen, kv_seqlen=None):
        self.q_seqlen = [int(n) for n in q_seqlen]
        self.kv_seqlen = [int(n) for n in (kv_seqlen if kv_seqlen is not None else q_seqlen)]

    @classmethod
    def from_seqlens(cls, q_seqlen, kv_seqlen=None, **kwargs):
        if kwargs:
            _refuse(f"BlockDiagonalMask.from_seqlens({sorted(kwargs)})", "pass q_seqlen / kv_seqlen")
        return cls(q_seqlen, kv_seqlen)

    def make_causal(self):
        return BlockDiagonalCausalMask(self.q_seqlen, self.kv_seqlen)


class BlockDiagonalCausalMask(BlockDiagonalMask):
    causal = True


def _cu(lens, device):
    return torch.tensor([0] + list(torch.tensor(lens).cumsum(0).tolist()), dtype=torch.int32,
                        device=device)


def memory_efficient_attention(query, key, value, attn_bias=None, p=0.0, scale=None, *, op=None,
                               output_dtype=None):
    import phyx.ops
    from phyx_patches.flash_attn_shim import varlen

    if p:
        _refuse(f"dropout p={p}", "pass p=0.0 (phyx.ops.attention has no attention dropout)")
    if op is not None:
        _refuse(f"op={op!r}", "leave op=None: the active phyx backend picks the kernel")
    if output_dtype is not None:
        _refuse("output_dtype", "cast the output")
    if query.dim() == 5:
        _refuse("5-D (grouped) inputs", "reshape to [B, M, H, K] with repeated KV heads or GQA")
    squeeze = query.dim() == 3
    q, k, v = (t.unsqueeze(2) if squeeze else t for t in (query, key, value))
    if attn_bias is None:
        out = phyx.ops.attention(q, k, v, scale=scale)
    elif isinstance(attn_bias, LowerTriangularMask):
        out = phyx.ops.attention(q, k, v, is_causal=True, scale=scale)
    elif isinstance(attn_bias, BlockDiagonalMask):
        if q.shape[0] != 1:
            _refuse("a block-diagonal bias with batch > 1", "pack the sequences into batch 1")
        if attn_bias.causal and attn_bias.q_seqlen != attn_bias.kv_seqlen:
            _refuse("BlockDiagonalCausalMask with different q / kv lengths",
                    "pass per-block bool masks to phyx.ops.attention")
        cq, ck = _cu(attn_bias.q_seqlen, q.device), _cu(attn_bias.kv_seqlen, q.device)
        out, _ = varlen(q[0], k[0], v[0], cq, ck, max(attn_bias.q_seqlen),
                        max(attn_bias.kv_seqlen), scale, attn_bias.causal)
        out = out[None]
    elif isinstance(attn_bias, torch.Tensor):
        if not attn_bias.is_floating_point():
            _refuse(f"a {attn_bias.dtype} bias tensor", "xformers biases are additive float tensors")
        out = phyx.ops.attention(q, k, v, attn_bias, scale=scale)
    else:
        _refuse(f"attn_bias {type(attn_bias).__name__}", "use None, LowerTriangularMask, "
                "BlockDiagonalMask(.from_seqlens) or an additive tensor")
    return out.squeeze(2) if squeeze else out


def install(layer) -> None:
    from phyx_patches._fake_module import make_module

    biases = {"AttentionBias": AttentionBias, "LowerTriangularMask": LowerTriangularMask,
              "BlockDiagonalMask": BlockDiagonalMask,
              "BlockDiagonalCausalMask": BlockDiagonalCausalMask}
    ab = make_module("xformers.ops.fmha.attn_bias", dict(biases), "phyx_patches: xformers biases",
                     SERVES, package=False)
    fmha = make_module("xformers.ops.fmha", {"memory_efficient_attention": memory_efficient_attention,
                                             "attn_bias": ab, **biases},
                       "phyx_patches: xformers.ops.fmha", SERVES)
    ops = make_module("xformers.ops", {"memory_efficient_attention": memory_efficient_attention,
                                       "fmha": fmha, **biases}, "phyx_patches: xformers.ops", SERVES)
    root = make_module("xformers", {"ops": ops, "__version__": "0.0.29+phyx"},
                       "phyx_patches: xformers served by phyx.ops.attention", SERVES)
    for name, mod in (("xformers", root), ("xformers.ops", ops), ("xformers.ops.fmha", fmha),
                      ("xformers.ops.fmha.attn_bias", ab)):
        layer.set_module(name, mod)
