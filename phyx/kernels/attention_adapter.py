"""The attention contract around a vendor core, shared by the cpu, cuda and npu kernels.

phyx.ops.attention's arguments (see phyx/ops/reference.py) are richer than most vendor kernels:
`contract_attention(core, support, name)` turns a core that only takes

    core(q, k, v, mask, is_causal, scale, return_lse) -> out  or  (out, lse)

(q/k/v in B S N D, mask bool True = attend or additive float, broadcastable to [B, N, Sq, Skv])
into a phyx attention kernel. The adapter:
- checks each optional argument against the kernel's OpSupport and raises
  UnsupportedArgumentError for one it cannot honour (never drops it);
- kv_lens: slices K/V per batch element (one call when all lengths agree), never a dense mask;
  a zero length gives output 0 and lse -inf, as the reference does;
- dead rows (a mask, key lengths and causality leave a query row no key): output 0, lse -inf,
  whatever the core wrote there;
- q_lens: zeroes padded query rows (lse -inf) after the core.
`fold_causal` is the top-left causal fold for cores that cannot take a mask and is_causal
together (torch SDPA, the NPU's explicit masks). Backends with native varlen paths (the NPU's TND
layout) keep their own length handling and use only the helpers they share.
"""
from __future__ import annotations

from typing import Callable

import torch

from phyx.kernels.spec import Feature, OpSupport

Core = Callable[..., object]


def check_arguments(name: str, support: OpSupport, q, k, attn_mask, kv_lens, q_lens, is_causal,
                    scale, return_lse) -> None:
    """Refuse (UnsupportedArgumentError) any argument the kernel does not declare."""
    support.require_dtype(name, q.dtype)
    if attn_mask is not None:
        support.require(name, Feature.BOOL_MASK if attn_mask.dtype == torch.bool else Feature.ADDITIVE_MASK)
    for flag, feature in ((kv_lens is not None, Feature.KV_LENS), (q_lens is not None, Feature.Q_LENS),
                          (is_causal, Feature.CAUSAL), (q.shape[2] != k.shape[2], Feature.GQA),
                          (return_lse, Feature.LSE), (scale is not None, Feature.SCALE)):
        if flag:
            support.require(name, feature)


def fold_causal(mask: torch.Tensor, sq: int, sk: int) -> torch.Tensor:
    """A mask with top-left causality (SDPA's is_causal) folded in: bool masks are and-ed, additive
    masks get -inf above the diagonal."""
    causal = torch.ones(sq, sk, dtype=torch.bool, device=mask.device).tril()
    return mask & causal if mask.dtype == torch.bool else mask.masked_fill(~causal, float("-inf"))


def dead_rows(mask, kv_lens, is_causal, B: int, Nq: int, Sq: int, Skv: int) -> torch.Tensor:
    """Bool [B, Nq, Sq]: query rows that mask, key lengths and causality leave with no key."""
    keep = mask if mask.dtype == torch.bool else mask > float("-inf")
    if keep.dim() < 4:
        keep = keep.view((1,) * (4 - keep.dim()) + tuple(keep.shape))
    idx = torch.arange(Skv, device=keep.device)
    if kv_lens is not None:
        keep = keep & (idx[None, :] < kv_lens.to(keep.device).view(-1, 1))[:, None, None, :]
    if is_causal:
        keep = keep & (idx[None, :] <= torch.arange(Sq, device=keep.device)[:, None])
    return (~keep.any(dim=-1)).expand(B, Nq, Sq)


def padded_rows(q_lens, B: int, Sq: int, device) -> torch.Tensor:
    """Bool [B, 1, Sq]: query rows beyond each batch element's q_lens."""
    pad = torch.arange(Sq, device=device)[None, :] >= q_lens.to(device).view(B, 1)
    return pad[:, None, :]


def zero_rows(out: torch.Tensor, lse, rows):
    """The contract for rows without keys: output 0 and lse -inf. rows: bool [B, N|1, Sq] or None."""
    if rows is None:
        return out, lse
    out = out.masked_fill(rows.transpose(1, 2)[..., None], 0)
    if lse is not None:
        lse = lse.masked_fill(rows, float("-inf"))
    return out, lse


def _mask_for_batch(mask, b: int, n_keys: int):
    """The slice of a [.., Sq, Skv]-broadcastable mask for batch element b and the first n keys."""
    if mask is None:
        return None
    if mask.dim() == 4 and mask.shape[0] > 1:
        mask = mask[b:b + 1]
    return mask[..., :n_keys] if mask.shape[-1] != 1 else mask


def _per_batch(core, q, k, v, mask, lens, is_causal, scale, return_lse):
    outs, lses = [], []
    _, Sq, Nq, _ = q.shape
    for b, n in enumerate(lens):
        if n == 0:  # no key at all: output 0, lse -inf (the reference's fully masked row)
            outs.append(q.new_zeros(1, Sq, Nq, v.shape[-1]))
            lses.append(torch.full((1, Nq, Sq), float("-inf"), device=q.device))
            continue
        r = core(q[b:b + 1], k[b:b + 1, :n], v[b:b + 1, :n], _mask_for_batch(mask, b, n),
                 is_causal, scale, return_lse)
        outs.append(r[0] if return_lse else r)
        if return_lse:
            lses.append(r[1])
    out = torch.cat(outs, dim=0)
    return (out, torch.cat(lses, dim=0)) if return_lse else out


def _with_kv_lens(core, q, k, v, attn_mask, kv_lens, is_causal, scale, return_lse):
    Skv = k.shape[1]
    lens = [int(n) for n in kv_lens.tolist()]
    if any(n < 0 or n > Skv for n in lens):
        raise ValueError(f"kv_lens {lens} out of range [0, {Skv}]")
    if len(set(lens)) == 1 and lens[0] > 0:
        n = lens[0]
        m = attn_mask[..., :n] if attn_mask is not None and attn_mask.shape[-1] != 1 else attn_mask
        return core(q, k[:, :n], v[:, :n], m, is_causal, scale, return_lse)
    return _per_batch(core, q, k, v, attn_mask, lens, is_causal, scale, return_lse)


def contract_attention(core: Core, support: OpSupport, name: str = "attention") -> Callable:
    """A phyx attention kernel (the signature phyx.ops calls) around `core`."""
    def attention(q, k, v, attn_mask=None, kv_lens=None, q_lens=None, is_causal=False,
                  scale=None, return_lse=False):
        check_arguments(name, support, q, k, attn_mask, kv_lens, q_lens, is_causal, scale, return_lse)
        B, Sq, Nq, _ = q.shape
        if kv_lens is None:
            res = core(q, k, v, attn_mask, is_causal, scale, return_lse)
        else:
            res = _with_kv_lens(core, q, k, v, attn_mask, kv_lens, is_causal, scale, return_lse)
        out, lse = res if return_lse else (res, None)
        if attn_mask is not None:
            out, lse = zero_rows(out, lse, dead_rows(attn_mask, kv_lens, is_causal, B, Nq, Sq, k.shape[1]))
        if q_lens is not None:
            out, lse = zero_rows(out, lse, padded_rows(q_lens, B, Sq, q.device))
        return (out, lse) if return_lse else out

    attention.__name__ = attention.__qualname__ = "attention_" + name.replace(".", "_").replace("-", "_")
    return attention


__all__ = ["contract_attention", "check_arguments", "fold_causal", "dead_rows", "padded_rows",
           "zero_rows"]
