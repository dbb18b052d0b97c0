"""phyx op arguments -> torch_npu calls. ALL of the NPU argument translation lives here.

Every kernel is a method of NpuKernels, which holds the torch_npu-like module object (the real
torch_npu behind RealTorchNpu, or the emulator). The small module-level helpers (mask inversion,
scale, layout string, pse, gelu call, rope table expansion) are looked up at call time so that
tests can plant a wrong translation with monkeypatch and show it is caught.

The traps handled here (see docs/architecture.md, "NPU backend and emulator"):
- mask meaning is inverted (NPU: True = masked out) and must be bool/uint8;
- an additive float mask goes through `pse`, which FA adds BEFORE the scale
  (scale * (QK^T + pse)), so it is divided by the scale first; -inf entries go to the bool mask;
- `scale` defaults to 1.0 on the NPU, so it is always passed;
- layout string + head count (FA `head_num`, FIA `num_heads` / `num_key_value_heads`);
- key lengths: FA takes cumulative lengths (no leading 0) in the TND layout only, FIA takes
  per-batch lengths in BSND;
- causal = sparse_mode 2 (leftUpCausal, SDPA's top-left) with the compressed 2048x2048 mask;
  never sparse_mode 3 (bottom-right, flash-attn's), never a pre_tockens band limit;
- rows that may be fully masked get inner_precise=2, and the contract (output 0, lse -inf) is
  enforced here from the mask, independent of the kernel;
- FIA takes key and value of identical shape only: a value head size unlike the key's goes to FA
  (which allows Dv <= D);
- npu_rotary_mul's interleave mode needs jit_compile=False: otherwise the reference kernel runs
  (with one warning);
- exact GELU through npu_gelu(approximate='none'): torch's native gelu on the NPU ignores
  `approximate` and computes tanh.
"""
from __future__ import annotations

import math
import warnings

import torch

from phyx.errors import UnsupportedArgumentError
from phyx.kernels.attention_adapter import fold_causal, zero_rows
from phyx.ops import reference

# --- helpers a planted-bug test may monkeypatch ---------------------------------------------
QKV_LAYOUT = "BSND"          # phyx passes q/k/v as [B, S, N, D]: no transpose needed
VARLEN_LAYOUT = "TND"
SPARSE_NONE = 0              # defaultMask: full user mask (or none)
SPARSE_CAUSAL_TOP_LEFT = 2   # leftUpCausal == torch SDPA is_causal. (3 is bottom-right.)
ROW_CORRECTION = 2           # inner_precise: compute invalid (fully masked) rows
COMPRESSED = 2048
# Documented shape limits (torch_npu 2.14 _op_plugin_docs.py): FA D 1..768, Nq 1..256;
# FIA (Q_S > 1) D <= 512, N <= 256, N*D < 65535 in BSH/BSND.
FA_MAX_D, FA_MAX_HEADS = 768, 256
FIA_MAX_D, FIA_MAX_HEADS, FIA_MAX_ND = 512, 256, 65535
ROPE_MODE = {"adjacent": "interleave", "half": "half"}


def to_npu_mask(keep: torch.Tensor) -> torch.Tensor:
    """phyx bool mask (True = attend) -> NPU atten_mask (True = masked out)."""
    return ~keep


def scale_value(scale, head_dim: int) -> float:
    """The NPU default is 1.0, not 1/sqrt(D): always pass an explicit value."""
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)


def pse_from_additive(additive_f32: torch.Tensor, scale: float) -> torch.Tensor:
    """FA computes scale * (QK^T + pse); our mask is added after the scale, so divide it."""
    return additive_f32 / scale


def fia_takes_kv(k: torch.Tensor, v: torch.Tensor) -> bool:
    """FIA requires key and value of identical shape (so Dv == Dk); FA allows Dv <= Dk."""
    return tuple(k.shape) == tuple(v.shape)


def fused_rope_ok(tnpu, mode: str, head_dim: int) -> tuple[bool, str]:
    """npu_rotary_mul's interleave mode exists only with jit_compile=False (torch_npu's default on
    A2/A3); under jit_compile=True the op takes rotary_mode 'half' with D == 128 only
    (torch_npu 2.14 docs). Asks torch_npu.npu.is_jit_compile_false() at call time, because
    torch_npu.npu.set_compile_mode can change it while the process runs."""
    ask = getattr(tnpu.npu, "is_jit_compile_false", None)
    if ask is None:
        return False, ("torch_npu.npu.is_jit_compile_false is missing (torch_npu older than phyx "
                       "expects), so the compile mode is unknown")
    try:
        jit_false = bool(ask())
    except Exception as e:  # noqa: BLE001 - an unknown mode means the safe path
        return False, f"torch_npu.npu.is_jit_compile_false() failed ({type(e).__name__}: {e})"
    if jit_false:
        return True, ""
    if mode == "interleave" or head_dim != 128:
        return False, (f"npu_rotary_mul rotary_mode {mode!r} with D={head_dim} needs jit_compile=False "
                       f"(under jit_compile=True it takes 'half' with D=128 only)")
    return True, ""


_warned: set = set()


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def gelu_call(tnpu, x: torch.Tensor, approximate: str) -> torch.Tensor:
    """Exact GELU must not go through the device's native gelu (it computes tanh regardless)."""
    return tnpu.npu_gelu(x, approximate=approximate)


def rope_table(half_table: torch.Tensor, mode: str) -> torch.Tensor:
    """Our cos/sin are [.., S, D/2]; npu_rotary_mul wants full-width r1/r2 [.., S, D]."""
    if mode == "half":        # out = x*r1 + cat(-x2, x1)*r2  -> r = [c | c]
        return torch.cat((half_table, half_table), dim=-1)
    return half_table.repeat_interleave(2, dim=-1)   # interleave: r = c0 c0 c1 c1 ...


_compressed_cache: dict = {}


def causal_compressed_mask(device) -> torch.Tensor:
    """The optimised mask sparse modes 2/3/4 require: 2048x2048, True above the diagonal."""
    key = str(device)
    m = _compressed_cache.get(key)
    if m is None:
        m = torch.ones(COMPRESSED, COMPRESSED, dtype=torch.bool, device=device).triu(1)
        _compressed_cache[key] = m
    return m


# --- checks ------------------------------------------------------------------------------------
def refuse_unsupported_dtypes(op: str, *tensors) -> None:
    for t in tensors:
        if t is None:
            continue
        if t.dtype == torch.float64 or t.is_complex():
            raise UnsupportedArgumentError(
                f"{op} on the NPU: {t.dtype} is not supported (the NPU has no fast float64/complex "
                f"kernels; they fall back to the AI CPU or fail). Build float64/complex tables on the "
                f"host and pass float32 (phyx.ops.rope_tables does), or run the float64 reference on "
                f"backend 'cpu'.")
        if t.is_floating_point() and t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise UnsupportedArgumentError(f"{op} on the NPU: dtype {t.dtype} is not supported "
                                           f"(float32, float16, bfloat16)")


def _as4d(m: torch.Tensor) -> torch.Tensor:
    return m.reshape((1,) * (4 - m.dim()) + tuple(m.shape)) if m.dim() < 4 else m


def _needs_grad(*ts) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


class NpuKernels:
    """The NPU kernels for phyx.ops, calling `tnpu` (torch_npu or the emulator)."""

    def __init__(self, tnpu, fused_ops: frozenset):
        self.tnpu = tnpu
        self.fused = fused_ops

    # ================================================================================ attention
    def attention(self, q, k, v, attn_mask, kv_lens, q_lens, is_causal, scale, return_lse):
        refuse_unsupported_dtypes("attention", q, k, v, attn_mask)
        B, Sq, Nq, D = q.shape
        Skv, Nkv = k.shape[1], k.shape[2]  # noqa: F841
        sc = scale_value(scale, D)
        dev = q.device
        # One bool keep-mask (True = attend) and one additive part, both [b?, n?, Sq, Skv].
        keep, pse_f = None, None
        if attn_mask is not None:
            m = _as4d(attn_mask).to(dev)
            if m.dtype == torch.bool:
                keep = m.expand(m.shape[0], m.shape[1], Sq, Skv)
            else:
                pse_f = pse_from_additive(m.float(), sc).expand(m.shape[0], m.shape[1], Sq, Skv)
                # -inf (or beyond the dtype's range after the division) means masked out: it goes
                # to the bool mask, never into pse, where it could turn a row into NaN.
                dead = torch.isneginf(m).expand_as(pse_f) | (pse_f < torch.finfo(q.dtype).min)
                keep = ~dead
                fmax = torch.finfo(q.dtype).max
                pse_f = torch.where(dead, torch.zeros_like(pse_f), pse_f).clamp(-fmax, fmax)
        if is_causal and keep is not None:  # fold causal (top-left) into the user's mask
            keep, is_causal = fold_causal(keep, Sq, Skv), False
        qlens = [int(x) for x in q_lens.tolist()] if q_lens is not None else None
        kvlens = [int(x) for x in kv_lens.tolist()] if kv_lens is not None else None

        # Which rows the contract says are dead (output 0, lse -inf): derived from the mask and
        # lengths, so the result does not depend on what the kernel writes there.
        dead_rows = self._dead_rows(keep, kvlens, qlens, B, Sq, Skv, dev)

        route = self._route(q, k, v, keep, pse_f, is_causal, kvlens, qlens)
        if route == "fia":
            out, lse = self._fia(q, k, v, keep, is_causal, kvlens, qlens, sc, return_lse,
                                 rows_may_die=dead_rows is not None)
        elif route == "fa_tnd":
            out, lse = self._fa_tnd(q, k, v, is_causal, kvlens, qlens, sc, return_lse)
        elif route == "fa_per_batch":
            out, lse = self._fa_per_batch(q, k, v, keep, pse_f, is_causal, kvlens, qlens, sc, return_lse)
        else:
            out, lse = self._fa(q, k, v, keep, pse_f, is_causal, sc, return_lse,
                                rows_may_die=dead_rows is not None)
        out, lse = zero_rows(out, lse, dead_rows)   # the shared contract: output 0, lse -inf
        return (out, lse) if return_lse else out

    def _route(self, q, k, v, keep, pse_f, is_causal, kvlens, qlens) -> str:
        B, Sq, Nq, D = q.shape
        Nkv = k.shape[2]
        fia_ok = ("npu_fused_infer_attention_score" in self.fused
                  and not _needs_grad(q, k, v, pse_f)
                  and q.dtype in (torch.float16, torch.bfloat16)
                  and pse_f is None                      # FIA's pse_shift order is undocumented
                  and fia_takes_kv(k, v)                 # FIA: key and value shapes identical
                  and D % 16 == 0 and Nq // Nkv <= 64
                  and D <= FIA_MAX_D and Nq <= FIA_MAX_HEADS and Nq * D < FIA_MAX_ND
                  and (keep is None or keep.shape[1] == 1)   # FIA has no per-head mask
                  and Sq > 1)                            # Q_S == 1 ignores sparse_mode / row fix
        if fia_ok:
            return "fia"
        if "npu_fusion_attention" not in self.fused:
            raise UnsupportedArgumentError(
                "attention on this NPU: npu_fusion_attention is not available on this SoC and "
                "npu_fused_infer_attention_score cannot take this call (training, fp32, additive "
                "mask, per-head mask, value head size unlike the key's, D not 16-aligned or "
                "Sq == 1); use policy 'reference'")
        Dv = v.shape[-1]
        if not (1 <= D <= FA_MAX_D and Dv <= D and Nq <= FA_MAX_HEADS):
            raise UnsupportedArgumentError(
                f"attention on the NPU: npu_fusion_attention takes head_dim 1..{FA_MAX_D} (Dv <= D) "
                f"and at most {FA_MAX_HEADS} query heads per device, got D={D}, Dv={Dv}, N={Nq}; "
                f"shard heads over more ranks (tp / sp) or use policy 'reference'")
        if kvlens is not None or qlens is not None:
            # varlen TND takes only a shared SS mask without padded rows: with a user mask,
            # slice K/V per batch element instead (still no dense key-length mask).
            return "fa_tnd" if keep is None and pse_f is None else "fa_per_batch"
        return "fa"

    @staticmethod
    def _dead_rows(keep, kvlens, qlens, B, Sq, Skv, dev):
        """[B, N|1, Sq] True where a query row has no key to attend to (or is padding), or None."""
        dead = None
        if keep is not None:
            k4 = keep
            if kvlens is not None:
                kv_ok = torch.arange(Skv, device=dev)[None, :] < torch.tensor(kvlens, device=dev)[:, None]
                k4 = k4 & kv_ok[:, None, None, :]
            dead = ~k4.any(dim=-1)
            dead = dead.expand(B, dead.shape[1], Sq)
        elif kvlens is not None and min(kvlens) == 0:
            dead = (torch.tensor(kvlens, device=dev) == 0)[:, None, None].expand(B, 1, Sq)
        if qlens is not None:
            pad = torch.arange(Sq, device=dev)[None, :] >= torch.tensor(qlens, device=dev)[:, None]
            pad = pad[:, None, :]
            dead = pad if dead is None else dead | pad
        return dead

    # ---------------------------------------------------------------------------- FA, BSND
    def _fa_masks(self, keep, pse_f, is_causal, B, Nq, dtype, dev):
        """(atten_mask, pse, sparse_mode) for FA in a non-varlen layout."""
        if keep is not None:
            b, n = keep.shape[0], keep.shape[1]
            if n > 1:     # BNSS
                am = to_npu_mask(keep.expand(B, Nq, -1, -1))
            elif b > 1:   # B1SS
                am = to_npu_mask(keep)
            else:         # SS
                am = to_npu_mask(keep[0, 0])
            mask, mode = am.contiguous(), SPARSE_NONE
        elif is_causal:
            mask, mode = causal_compressed_mask(dev), SPARSE_CAUSAL_TOP_LEFT
        else:
            mask, mode = None, SPARSE_NONE
        pse = None
        if pse_f is not None:   # BNSS or 1NSS
            pse = pse_f.expand(pse_f.shape[0], Nq, -1, -1).to(dtype).contiguous()
        return mask, pse, mode

    def _fa(self, q, k, v, keep, pse_f, is_causal, sc, return_lse, rows_may_die):
        B, Sq, Nq, D = q.shape
        mask, pse, mode = self._fa_masks(keep, pse_f, is_causal, B, Nq, q.dtype, q.device)
        res = self.tnpu.npu_fusion_attention(
            q.contiguous(), k.contiguous(), v.contiguous(), Nq, QKV_LAYOUT,
            pse=pse, atten_mask=mask, scale=sc, keep_prob=1.0,
            inner_precise=ROW_CORRECTION if rows_may_die else 0, sparse_mode=mode)
        out = res[0]
        lse = _lse(res[1], res[2]) if return_lse else None       # [B, N, Sq]
        return out, lse

    def _fa_per_batch(self, q, k, v, keep, pse_f, is_causal, kvlens, qlens, sc, return_lse):
        B, Sq, Nq, D = q.shape
        Skv = k.shape[1]
        outs, lses = [], []
        for b in range(B):
            qn = qlens[b] if qlens is not None else Sq
            kn = kvlens[b] if kvlens is not None else Skv
            if qn == 0 or kn == 0:
                outs.append(q.new_zeros(1, Sq, Nq, v.shape[-1]))
                lses.append(q.new_full((1, Nq, Sq), float("-inf"), dtype=torch.float32))
                continue
            kb = keep[b:b + 1] if keep is not None and keep.shape[0] > 1 else keep
            pb = pse_f[b:b + 1] if pse_f is not None and pse_f.shape[0] > 1 else pse_f
            kb = kb[..., :qn, :kn] if kb is not None else None
            pb = pb[..., :qn, :kn] if pb is not None else None
            o, l = self._fa(q[b:b + 1, :qn], k[b:b + 1, :kn], v[b:b + 1, :kn], kb, pb, is_causal, sc,
                            return_lse, rows_may_die=kb is not None)
            if qn < Sq:
                o = torch.cat((o, o.new_zeros(1, Sq - qn, Nq, o.shape[-1])), dim=1)
                if l is not None:
                    l = torch.cat((l, l.new_full((1, Nq, Sq - qn), float("-inf"))), dim=2)
            outs.append(o)
            lses.append(l)
        out = torch.cat(outs, dim=0)
        return out, (torch.cat(lses, dim=0) if return_lse else None)

    # ---------------------------------------------------------------------------- FA, TND
    def _fa_tnd(self, q, k, v, is_causal, kvlens, qlens, sc, return_lse):
        """Varlen: pack valid tokens, cumulative lengths without the leading 0."""
        B, Sq, Nq, D = q.shape
        Skv = k.shape[1]
        dev = q.device
        kvl = kvlens if kvlens is not None else [Skv] * B
        ql = qlens if qlens is not None else [Sq] * B
        ql = [0 if kv == 0 else n for n, kv in zip(ql, kvl)]   # no keys: the rows are dead anyway
        q_valid = torch.arange(Sq, device=dev)[None, :] < torch.tensor(ql, device=dev)[:, None]
        kv_valid = torch.arange(Skv, device=dev)[None, :] < torch.tensor(kvl, device=dev)[:, None]
        out = q.new_zeros(B, Sq, Nq, v.shape[-1])
        lse_bsn = q.new_full((B, Sq, Nq), float("-inf"), dtype=torch.float32)
        if sum(ql) == 0:
            return out, (lse_bsn.transpose(1, 2) if return_lse else None)
        cum_q = torch.tensor(ql).cumsum(0).tolist()
        cum_kv = torch.tensor(kvl).cumsum(0).tolist()
        mask, mode = None, SPARSE_NONE
        if is_causal:
            mask, mode = causal_compressed_mask(dev), SPARSE_CAUSAL_TOP_LEFT
        res = self.tnpu.npu_fusion_attention(
            q[q_valid].contiguous(), k[kv_valid].contiguous(), v[kv_valid].contiguous(), Nq,
            VARLEN_LAYOUT, atten_mask=mask, scale=sc, keep_prob=1.0, actual_seq_qlen=cum_q,
            actual_seq_kvlen=cum_kv, sparse_mode=mode, softmax_layout="TND")
        out = out.index_put((q_valid,), res[0])
        lse = None
        if return_lse:
            lse = lse_bsn.index_put((q_valid,), _lse(res[1], res[2])).transpose(1, 2)
        return out, lse

    # ---------------------------------------------------------------------------- FIA
    def _fia(self, q, k, v, keep, is_causal, kvlens, qlens, sc, return_lse, rows_may_die):
        B, Sq, Nq, D = q.shape
        Nkv = k.shape[2]
        if keep is not None:   # (B,1,Sq,Skv) or (Sq,Skv)
            mask = to_npu_mask(keep if keep.shape[0] > 1 else keep[0, 0]).contiguous()
            mode = SPARSE_NONE
        elif is_causal:
            mask, mode = causal_compressed_mask(q.device), SPARSE_CAUSAL_TOP_LEFT
        else:
            mask, mode = None, SPARSE_NONE
        out, lse = self.tnpu.npu_fused_infer_attention_score(
            q.contiguous(), k.contiguous(), v.contiguous(), atten_mask=mask,
            actual_seq_lengths=qlens, actual_seq_lengths_kv=kvlens, num_heads=Nq, scale=sc,
            input_layout=QKV_LAYOUT, num_key_value_heads=Nkv, sparse_mode=mode,
            inner_precise=ROW_CORRECTION if rows_may_die else 0, softmax_lse_flag=bool(return_lse))
        return out, (lse[..., 0] if return_lse else None)

    # ================================================================================ pointwise
    def rms_norm(self, x, weight, eps):
        refuse_unsupported_dtypes("rms_norm", x, weight)
        if weight is not None and (weight.dtype != x.dtype or weight.dim() != 1):
            # npu_rms_norm needs gamma in x.dtype; the reference promotes (bf16 x * fp32 w -> fp32).
            return reference.rms_norm(x, weight, eps)
        gamma = weight if weight is not None else _ones(x.shape[-1], x.dtype, x.device)
        x2 = x if x.dim() >= 2 else x[None]
        y = self.tnpu.npu_rms_norm(x2, gamma, epsilon=eps)[0]
        return y if x.dim() >= 2 else y[0]

    def rope(self, x, cos, sin, style="adjacent"):
        refuse_unsupported_dtypes("rope", x, cos, sin)
        if style not in ROPE_MODE:
            raise ValueError(f"rope style must be 'adjacent' or 'half', got {style!r}")
        mode = ROPE_MODE[style]
        B, S, N, D = x.shape
        per_batch = cos.dim() == 3
        fits = D < 896 and D % 2 == 0 and (
            (mode == "half" and B < 1000 and N < 1000) or (mode == "interleave" and B * N < 1000
                                                           and not per_batch))
        if not fits:  # outside the fused kernel's documented limits: same maths, plain torch
            return reference.rope(x, cos, sin, style)
        ok, why = fused_rope_ok(self.tnpu, mode, D)
        if not ok:
            warn_once("rope", f"phyx rope on the NPU: {why}; using the reference kernel "
                                     f"(same maths, plain torch). Call torch_npu.npu.set_compile_mode("
                                     f"jit_compile=False) for the fused kernel.")
            return reference.rope(x, cos, sin, style)
        c = cos[None] if not per_batch else cos   # [1|B, S, D/2]
        s = sin[None] if not per_batch else sin
        r1 = rope_table(c.float(), mode)[:, :, None, :]    # 1S1D / BS1D
        r2 = rope_table(s.float(), mode)[:, :, None, :]
        # The contract applies RoPE in fp32: run the kernel in fp32, round once.
        return self.tnpu.npu_rotary_mul(x.float().contiguous(), r1.contiguous(), r2.contiguous(),
                                        rotary_mode=mode).to(x.dtype)

    def swiglu(self, x):
        refuse_unsupported_dtypes("swiglu", x)
        # swish(first half) * second half == [gate | up]; the op takes contiguous tensors only
        return self.tnpu.npu_swiglu(x.contiguous(), dim=-1)

    def gelu(self, x, approximate="none"):
        refuse_unsupported_dtypes("gelu", x)
        return gelu_call(self.tnpu, x, approximate)


def _lse(softmax_max, softmax_sum):
    """FA's softmax_max / softmax_sum carry 8 identical copies in the last dim: lse = max + log(sum)."""
    mx, sm = softmax_max[..., 0], softmax_sum[..., 0]
    return torch.where(sm > 0, mx + torch.log(sm), torch.full_like(mx, float("-inf")))


_ones_cache: dict = {}


def _ones(n, dtype, device):
    key = (n, dtype, str(device))
    t = _ones_cache.get(key)
    if t is None:
        t = torch.ones(n, dtype=dtype, device=device)
        _ones_cache[key] = t
    return t
