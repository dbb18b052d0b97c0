"""flash_attn (FA2) and flash_attn_interface (FA3) served by phyx.ops.attention.

flash-attn's layout is already [B, S, N, D]. Differences translated here:
- causal: flash-attn aligns the causal mask bottom-right (query i sees keys
  j <= i + Skv - Sq), phyx/SDPA top-left; equal when Sq == Skv. For Sq > Skv the first
  Sq - Skv query rows see no key and flash-attn returns 0 for them; for Sq < Skv an explicit
  bool mask is built.
- varlen: packed (total, N, D) tensors with cu_seqlens; sequences are padded into a batch
  (self-attention, equal q/k lengths) with kv_lens, or attended one by one otherwise.
- what phyx cannot honour (dropout, sliding window, softcap, ALiBi, returned probabilities,
  KV cache) raises UnsupportedArgumentError instead of being dropped.
"""
from __future__ import annotations

import torch

from phyx.errors import UnsupportedArgumentError

SERVES_FA2 = ("flash_attn_func, flash_attn_varlen_func, flash_attn_qkvpacked_func, "
              "flash_attn_kvpacked_func, flash_attn_interface._flash_attn_forward, "
              "_flash_attn_varlen_forward")
SERVES_FA3 = "flash_attn_func, flash_attn_varlen_func"


def _ops():
    import phyx.ops

    return phyx.ops


def _refuse(name: str, what: str, fix: str):
    raise UnsupportedArgumentError(f"phyx_patches flash_attn shim: {name} {what} is not supported; {fix}")


def _check_common(dropout_p=0.0, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                  return_attn_probs=False, fa="flash_attn"):
    if dropout_p:
        _refuse(fa, f"dropout_p={dropout_p}", "pass dropout_p=0.0 (phyx.ops.attention has no "
                "attention dropout; use eval mode for parity)")
    if tuple(window_size) != (-1, -1):
        _refuse(fa, f"window_size={tuple(window_size)}", "sliding-window attention has no phyx "
                "kernel; pass an explicit bool mask to phyx.ops.attention")
    if softcap:
        _refuse(fa, f"softcap={softcap}", "logit soft-capping has no phyx kernel")
    if alibi_slopes is not None:
        _refuse(fa, "alibi_slopes", "build the ALiBi bias as an additive float mask for "
                "phyx.ops.attention")
    if return_attn_probs:
        _refuse(fa, "return_attn_probs=True", "attention probabilities are never materialised; "
                "for the log-sum-exp call phyx.ops.attention(..., return_lse=True)")


class _LseOps:
    """phyx.ops.attention, falling back to the plain-torch reference for calls that need the
    log-sum-exp when the active kernel cannot return it (flash-attn's private forward always
    returns it)."""

    @staticmethod
    def attention(q, k, v, attn_mask=None, *, return_lse=False, **kw):
        ops = _ops()
        try:
            return ops.attention(q, k, v, attn_mask, return_lse=return_lse, **kw)
        except UnsupportedArgumentError:
            if not return_lse:
                raise
            return ops.reference.attention(q, k, v, attn_mask, return_lse=True, **kw)


def attend(q, k, v, scale, causal, want_lse=False, lse_fallback=False):
    """flash-attn semantics on [B, S, N, D] via phyx.ops.attention. Returns (out, lse|None)."""
    ops = _LseOps if lse_fallback else _ops()
    sq, sk = q.shape[1], k.shape[1]
    kw = dict(scale=scale, return_lse=want_lse)
    if not causal or sq == sk:
        res = ops.attention(q, k, v, is_causal=causal, **kw)
    elif sq > sk:
        # bottom-right: rows < sq - sk see no key (flash-attn gives 0); the rest is square causal
        off = sq - sk
        tail = ops.attention(q[:, off:], k, v, is_causal=True, **kw)
        t_out = tail[0] if want_lse else tail
        head = t_out.new_zeros((q.shape[0], off) + tuple(t_out.shape[2:]))
        out = torch.cat([head, t_out], dim=1)
        if not want_lse:
            return out, None
        lse_head = torch.full((q.shape[0], q.shape[2], off), float("-inf"), device=q.device)
        return out, torch.cat([lse_head, tail[1]], dim=2)
    else:
        i = torch.arange(sq, device=q.device)[:, None]
        j = torch.arange(sk, device=q.device)[None, :]
        res = ops.attention(q, k, v, attn_mask=(j <= i + (sk - sq)), **kw)
    return (res[0], res[1]) if want_lse else (res, None)


def _lens(cu, name, total, max_len):
    if cu is None or cu.dim() != 1 or cu.numel() < 2 or cu.is_floating_point():
        raise UnsupportedArgumentError(
            f"{name} must be a 1-D integer tensor [batch + 1] of cumulative lengths starting at 0, "
            f"got {None if cu is None else (tuple(cu.shape), cu.dtype)}")
    c = [int(x) for x in cu.tolist()]
    lens = [b - a for a, b in zip(c[:-1], c[1:])]
    if c[0] != 0 or min(lens) < 0 or c[-1] != total:
        raise UnsupportedArgumentError(
            f"{name}={c} is not a valid cumulative-length vector for {total} packed tokens: it must "
            f"start at 0, never decrease and end at the total ({total})")
    if max_len is not None and max(lens) > int(max_len):
        raise UnsupportedArgumentError(
            f"a sequence of length {max(lens)} exceeds max_seqlen={int(max_len)} given with {name}; "
            f"pass the true maximum")
    return lens


def varlen(q, k, v, cu_q, cu_k, max_q, max_k, scale, causal, want_lse=False, lse_fallback=False):
    """Packed (total, N, D) attention. Returns (out [total_q, N, Dv], lse [N, total_q] | None)."""
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise UnsupportedArgumentError(
            f"flash_attn_varlen_func expects packed q/k/v of shape (total, N, D); got "
            f"q{tuple(q.shape)} k{tuple(k.shape)} v{tuple(v.shape)}")
    lq = _lens(cu_q, "cu_seqlens_q", q.shape[0], max_q)
    lk = _lens(cu_k, "cu_seqlens_k", k.shape[0], max_k)
    if len(lq) != len(lk):
        raise UnsupportedArgumentError(f"cu_seqlens_q has {len(lq)} sequences, cu_seqlens_k {len(lk)}")
    ops = _LseOps if lse_fallback else _ops()
    if lq == lk and min(lq) > 0:
        # self-attention lengths: one padded batch; top-left causal == bottom-right when Sq == Skv
        pad = torch.nn.utils.rnn.pad_sequence
        qp, kp, vp = (pad(list(torch.split(t, lq)), batch_first=True) for t in (q, k, v))
        kv_lens = None if len(set(lk)) == 1 else torch.tensor(lk, device=q.device)
        res = ops.attention(qp, kp, vp, kv_lens=kv_lens, is_causal=causal, scale=scale,
                            return_lse=want_lse)
        out_p, lse_p = (res if want_lse else (res, None))
        out = torch.cat([out_p[b, :n] for b, n in enumerate(lq)], dim=0)
        lse = torch.cat([lse_p[b, :, :n] for b, n in enumerate(lq)], dim=1) if want_lse else None
        return out, lse
    outs, lses = [], []
    for qb, kb, vb in zip(torch.split(q, lq), torch.split(k, lk), torch.split(v, lk)):
        if qb.shape[0] == 0:
            outs.append(qb.new_zeros((0, q.shape[1], v.shape[-1])))
            lses.append(torch.zeros(q.shape[1], 0, device=q.device))
            continue
        if kb.shape[0] == 0:   # no keys: flash-attn's output is 0
            outs.append(qb.new_zeros(qb.shape[:2] + (vb.shape[-1],)))
            lses.append(torch.full((q.shape[1], qb.shape[0]), float("-inf"), device=q.device))
            continue
        o, l_ = attend(qb[None], kb[None], vb[None], scale, causal, want_lse, lse_fallback)
        outs.append(o[0])
        if want_lse:
            lses.append(l_[0])
    return torch.cat(outs, dim=0), (torch.cat(lses, dim=1) if want_lse else None)


# --- FA2 API -----------------------------------------------------------------------------
def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                    softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    _check_common(dropout_p, window_size, softcap, alibi_slopes, return_attn_probs)
    return attend(q, k, v, softmax_scale, causal)[0]


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False,
                           return_attn_probs=False, block_table=None):
    _check_common(dropout_p, window_size, softcap, alibi_slopes, return_attn_probs)
    if block_table is not None:
        _refuse("flash_attn_varlen_func", "block_table (paged KV cache)", "gather the pages into "
                "contiguous K/V first")
    return varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                  softmax_scale, causal)[0]


def flash_attn_qkvpacked_func(qkv, dropout_p=0.0, softmax_scale=None, causal=False,
                              window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                              deterministic=False, return_attn_probs=False):
    """qkv: [B, S, 3, N, D]."""
    _check_common(dropout_p, window_size, softcap, alibi_slopes, return_attn_probs)
    q, k, v = qkv.unbind(dim=2)
    return attend(q, k, v, softmax_scale, causal)[0]


def flash_attn_kvpacked_func(q, kv, dropout_p=0.0, softmax_scale=None, causal=False,
                             window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                             deterministic=False, return_attn_probs=False):
    """kv: [B, Skv, 2, Nkv, D]."""
    _check_common(dropout_p, window_size, softcap, alibi_slopes, return_attn_probs)
    k, v = kv.unbind(dim=2)
    return attend(q, k, v, softmax_scale, causal)[0]


def flash_attn_with_kvcache(*args, **kwargs):
    _refuse("flash_attn_with_kvcache", "(KV-cache decoding)", "concatenate the cache and call "
            "flash_attn_func(q, k_all, v_all, causal=True), which the shim serves")


# --- FA2 private entry points (ring / sequence-parallel attention in upstream repos) -----------
def _private_checks(name, dropout_p, window_size, window_size_left, window_size_right, softcap,
                    alibi_slopes, return_softmax):
    if window_size is None:
        window_size = (window_size_left, window_size_right)
    _check_common(dropout_p, window_size, softcap, alibi_slopes, return_softmax,
                  f"flash_attn_interface.{name}")


def _flash_attn_forward(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                        window_size_left=-1, window_size_right=-1, softcap=0.0, alibi_slopes=None,
                        return_softmax=False, *, window_size=None):
    """flash-attn's private forward. 2.7+ (window_size_left/right): (out, softmax_lse [B, N, Sq]
    fp32, None, None); before 2.7 (window_size=(l, r)): (out, q, k, v, out, softmax_lse, None,
    None), as those versions return. No S_dmask / rng_state: dropout and probabilities refused."""
    _private_checks("_flash_attn_forward", dropout_p, window_size, window_size_left,
                    window_size_right, softcap, alibi_slopes, return_softmax)
    out, lse = attend(q, k, v, softmax_scale, causal, want_lse=True, lse_fallback=True)
    if window_size is not None:
        return out, q, k, v, out, lse, None, None
    return out, lse, None, None


def _flash_attn_varlen_forward(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                               dropout_p=0.0, softmax_scale=None, causal=False,
                               window_size_left=-1, window_size_right=-1, softcap=0.0,
                               alibi_slopes=None, return_softmax=False, block_table=None,
                               leftpad_k=None, seqused_k=None, *, window_size=None, **unused):
    """flash-attn's private varlen forward: (out, softmax_lse [N, total_q] fp32, None, None)
    (before 2.7: the 8-tuple with q, k, v, out_padded)."""
    _private_checks("_flash_attn_varlen_forward", dropout_p, window_size, window_size_left,
                    window_size_right, softcap, alibi_slopes, return_softmax)
    for arg, val in (("block_table", block_table), ("leftpad_k", leftpad_k),
                     ("seqused_k", seqused_k)):
        if val is not None:
            _refuse("flash_attn_interface._flash_attn_varlen_forward", arg,
                    "express the lengths through cu_seqlens")
    out, lse = varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                      softmax_scale, causal, want_lse=True, lse_fallback=True)
    if window_size is not None:
        return out, q, k, v, out, lse, None, None
    return out, lse, None, None


def _private_backward(name):
    def backward(*args, **kwargs):
        _refuse(f"flash_attn_interface.{name}", "(the private backward kernel)",
                "the phyx shim has no separate backward: let autograd differentiate through the "
                "forward (flash_attn_func / phyx.ops.attention) instead of calling the kernel")
    backward.__name__ = name
    return backward


PRIVATE_FA2 = {"_flash_attn_forward": _flash_attn_forward,
               "_flash_attn_varlen_forward": _flash_attn_varlen_forward,
               "_flash_attn_backward": _private_backward("_flash_attn_backward"),
               "_flash_attn_varlen_backward": _private_backward("_flash_attn_varlen_backward")}


# --- FA3 API (flash_attn_interface) --------------------------------------------------------
class LseUnavailable:
    """Stands in for FA3's softmax_lse when the active attention kernel cannot return it.
    Any use raises; code that only takes [0] (as Wan2.x does) never notices."""

    def __init__(self, kernel: str):
        self._why = (f"softmax_lse is not available: the active phyx attention kernel {kernel!r} "
                     f"does not return it; pin one that does (phyx.ops.use_kernel('attention', "
                     f"'reference')) or use phyx.set_policy('reference')")

    def __getattr__(self, name):
        raise UnsupportedArgumentError(self.__getattribute__("_why"))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        raise UnsupportedArgumentError(self._why)

    def _fail(self, *a, **k):
        raise UnsupportedArgumentError(self._why)

    __getitem__ = __add__ = __radd__ = __sub__ = __mul__ = __rmul__ = __truediv__ = __array__ = _fail


def _fa3_result(out_lse_fn, return_attn_probs):
    """Old FA3 returns (out, lse) always (Wan2.x indexes [0]); newer FA3 returns out unless
    return_attn_probs=True. None (not passed) follows the old API."""
    if return_attn_probs is False:
        return out_lse_fn(False)[0]
    try:
        return out_lse_fn(True)
    except UnsupportedArgumentError:
        if return_attn_probs:
            raise
        from phyx.ops import chosen_kernel

        return out_lse_fn(False)[0], LseUnavailable(chosen_kernel("attention").name)


def fa3_flash_attn_func(q, k, v, softmax_scale=None, causal=False, qv=None, q_descale=None,
                        k_descale=None, v_descale=None, window_size=(-1, -1), attention_chunk=0,
                        softcap=0.0, num_splits=1, pack_gqa=None, deterministic=False,
                        sm_margin=0, return_attn_probs=None, **unused):
    _check_fa3(qv, q_descale, k_descale, v_descale, window_size, softcap, attention_chunk, unused)
    return _fa3_result(lambda lse: attend(q, k, v, softmax_scale, causal, lse), return_attn_probs)


def fa3_flash_attn_varlen_func(q, k, v, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None,
                               max_seqlen_k=None, seqused_q=None, seqused_k=None,
                               softmax_scale=None, causal=False, qv=None, q_descale=None,
                               k_descale=None, v_descale=None, window_size=(-1, -1),
                               attention_chunk=0, softcap=0.0, num_splits=1, pack_gqa=None,
                               deterministic=False, sm_margin=0, return_attn_probs=None, **unused):
    _check_fa3(qv, q_descale, k_descale, v_descale, window_size, softcap, attention_chunk, unused)
    if seqused_q is not None or seqused_k is not None:
        _refuse("flash_attn_interface.flash_attn_varlen_func", "seqused_q / seqused_k",
                "express used lengths through cu_seqlens")
    return _fa3_result(lambda lse: varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                          max_seqlen_k, softmax_scale, causal, lse),
                       return_attn_probs)


def _check_fa3(qv, q_descale, k_descale, v_descale, window_size, softcap, attention_chunk, unused):
    fa = "flash_attn_interface"
    if qv is not None:
        _refuse(fa, "qv", "fold qv into q/v explicitly")
    if any(d is not None for d in (q_descale, k_descale, v_descale)):
        _refuse(fa, "FP8 descale factors", "dequantise q/k/v before attention")
    if attention_chunk:
        _refuse(fa, f"attention_chunk={attention_chunk}", "chunked attention has no phyx kernel")
    _check_common(0.0, window_size, softcap, None, False, fa)
    bad = {k: v for k, v in unused.items() if v not in (None, False, 0, (-1, -1))}
    if bad:
        _refuse(fa, f"arguments {sorted(bad)}", "these have no phyx equivalent")


def install(layer) -> None:
    from phyx_patches._fake_module import make_module

    fa2 = {"flash_attn_func": flash_attn_func, "flash_attn_varlen_func": flash_attn_varlen_func,
           "flash_attn_qkvpacked_func": flash_attn_qkvpacked_func,
           "flash_attn_kvpacked_func": flash_attn_kvpacked_func,
           "flash_attn_with_kvcache": flash_attn_with_kvcache}
    iface = make_module("flash_attn.flash_attn_interface", {**fa2, **PRIVATE_FA2},
                        "phyx_patches: flash_attn.flash_attn_interface served by phyx.ops.attention",
                        SERVES_FA2, package=False)
    root = make_module("flash_attn", {**fa2, "__version__": "2.7.4+phyx",
                                      "flash_attn_interface": iface},
                       "phyx_patches: flash_attn served by phyx.ops.attention", SERVES_FA2)
    fa3 = make_module("flash_attn_interface",
                      {"flash_attn_func": fa3_flash_attn_func,
                       "flash_attn_varlen_func": fa3_flash_attn_varlen_func},
                      "phyx_patches: FlashAttention-3 (flash_attn_interface) served by "
                      "phyx.ops.attention", SERVES_FA3, package=False)
    cuda_ext = make_module("flash_attn_2_cuda", {}, "phyx_patches: flash-attn's compiled kernels "
                           "are not served", "nothing (the compiled CUDA kernels); call "
                           "flash_attn.flash_attn_interface._flash_attn_forward or "
                           "phyx.ops.attention(..., return_lse=True)", package=False)
    layer.set_module("flash_attn_2_cuda", cuda_ext)
    layer.set_module("flash_attn", root)
    layer.set_module("flash_attn.flash_attn_interface", iface)
    layer.set_module("flash_attn_interface", fa3)
