"""A CPU emulation of the torch_npu ops the NPU backend calls.

It exposes the same function names, argument names and defaults as torch_npu 2.14's
`_op_plugin_docs.py` (the prototypes are kept in DOC_SIGNATURES and checked by a test), follows
the documented semantics (NPU mask meaning: True = masked out; FA adds pse *before* the scale;
scale defaults to 1.0; sparse modes with the compressed 2048x2048 mask; row correction via
inner_precise) and RAISES where the real op would (bad layout string, wrong mask dtype or shape,
FIA given fp32, float64 / complex tensors, head counts that do not fit the shapes, a sparse mode
whose mask does not match...).

It also models the device's traps: `native_gelu` stands for torch's own gelu on the NPU, which
ignores `approximate` and computes the tanh form.

What it proves: the translation in phyx_npu.translate. What it does not prove: NPU numerics.
Where the docs leave behaviour unspecified the emulator is conservative (e.g. query rows past
FIA's actual_seq_lengths are NaN), so a translation that relies on the unspecified fails here.
Features the backend never uses (dropout, quantisation, paged KV, prefix modes...) raise
EmulatorLimitation instead of being guessed.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

INT_MAX = 2147483647
COMPRESSED_MASK_SIZE = 2048
_NPU_FLOATS = (torch.float16, torch.bfloat16, torch.float32)
# What softmax runs at for a masked position: the kernel selects a very negative value, so a
# fully masked row without row correction becomes a uniform average (a plausible wrong number).
_MASK_FILL = torch.finfo(torch.float32).min

# Prototypes copied from torch_npu 2.14.0 _op_plugin_docs.py (npu_gelu from the meta registrations,
# which is where its signature is published). tests/backend/test_npu_emulator.py compares them with the
# emulator's signatures.
DOC_SIGNATURES = {
    "npu_fusion_attention": (
        "torch_npu.npu_fusion_attention(Tensor query, Tensor key, Tensor value, int head_num, "
        "str input_layout, Tensor? pse=None, Tensor? padding_mask=None, Tensor? atten_mask=None, "
        "float scale=1., float keep_prob=1., int pre_tockens=2147483647, int next_tockens=2147483647, "
        "int inner_precise=0, int[]? prefix=None, int[]? actual_seq_qlen=None, int[]? actual_seq_kvlen=None, "
        "int sparse_mode=0, bool gen_mask_parallel=True, bool sync=False, str softmax_layout=\"\")"),
    "npu_fused_infer_attention_score": (
        "torch_npu.npu_fused_infer_attention_score(Tensor query, Tensor key, Tensor value, *, "
        "Tensor? pse_shift=None, Tensor? atten_mask=None, SymInt[]? actual_seq_lengths=None, "
        "SymInt[]? actual_seq_lengths_kv=None, Tensor? dequant_scale1=None, Tensor? quant_scale1=None, "
        "Tensor? dequant_scale2=None, Tensor? quant_scale2=None, Tensor? quant_offset2=None, "
        "Tensor? antiquant_scale=None, Tensor? antiquant_offset=None, Tensor? block_table=None, "
        "Tensor? query_padding_size=None, Tensor? kv_padding_size=None, Tensor? key_antiquant_scale=None, "
        "Tensor? key_antiquant_offset=None, Tensor? value_antiquant_scale=None, "
        "Tensor? value_antiquant_offset=None, Tensor? key_shared_prefix=None, "
        "Tensor? value_shared_prefix=None, Tensor? actual_shared_prefix_len=None,Tensor? query_rope=None, "
        "Tensor? key_rope=None, Tensor? key_rope_antiquant_scale=None, int num_heads=1, float scale=1.0, "
        "int pre_tokens=2147483647, int next_tokens=2147483647, str input_layout=\"BSH\", "
        "int num_key_value_heads=0, int sparse_mode=0, int inner_precise=0, int block_size=0, "
        "int antiquant_mode=0, bool softmax_lse_flag=False, int key_antiquant_mode=0, "
        "int value_antiquant_mode=0)"),
    "npu_rms_norm": "torch_npu.npu_rms_norm(Tensor self, Tensor gamma, float epsilon=1e-06)",
    "npu_rotary_mul": ("torch_npu.npu_rotary_mul(Tensor input, Tensor r1, Tensor r2, "
                       "str rotary_mode='half', Tensor? rotate=None)"),
    "npu_swiglu": "torch_npu.npu_swiglu(Tensor self, int dim=-1)",
    "npu_gelu": "torch_npu.npu_gelu(Tensor self, *, str approximate=\"none\")",
}


class NpuEmulatorError(RuntimeError):
    """Raised where the real torch_npu op would raise (or would silently compute garbage)."""


class EmulatorLimitation(NotImplementedError):
    """A documented feature the emulator does not model (phyx never uses it)."""


def _fail(op: str, msg: str):
    raise NpuEmulatorError(f"{op}: {msg}")


def _check_dtypes(op: str, allowed, **tensors) -> None:
    for name, t in tensors.items():
        if t is None:
            continue
        if t.dtype == torch.float64 or t.is_complex():
            _fail(op, f"{name} has dtype {t.dtype}; the NPU has no {t.dtype} kernel for this op "
                      f"(supported: {', '.join(str(d) for d in allowed)})")
        if t.dtype not in allowed:
            _fail(op, f"{name} has unsupported dtype {t.dtype} (supported: "
                      f"{', '.join(str(d) for d in allowed)})")


# --------------------------------------------------------------------------------- attention core
def _compressed_causal_ok(mask: torch.Tensor) -> bool:
    if not 2 <= mask.dim() <= 4 or any(s != 1 for s in mask.shape[:-2]):
        return False   # (2048,2048), (1,2048,2048) or (1,1,2048,2048) only
    m = mask.reshape(mask.shape[-2], mask.shape[-1])
    if tuple(m.shape) != (COMPRESSED_MASK_SIZE, COMPRESSED_MASK_SIZE):
        return False
    want = _TRIU_CACHE.get(str(m.device))
    if want is None:
        want = torch.ones(COMPRESSED_MASK_SIZE, COMPRESSED_MASK_SIZE, dtype=torch.bool,
                          device=m.device).triu(1)
        _TRIU_CACHE[str(m.device)] = want
    return bool(torch.equal(m.bool(), want))


_TRIU_CACHE: dict = {}


def _sparse_masked(op, sparse_mode, sq, skv, pre, nxt, has_mask, device):
    """Positions masked out by the sparse mode itself (True = masked), or None."""
    i = torch.arange(sq, device=device)[:, None]
    j = torch.arange(skv, device=device)[None, :]
    if sparse_mode == 0:
        if not has_mask:  # no mask: pre/next tokens are ignored, full attention
            return None
        # band around the diagonal, origin top-left; the defaults (INT_MAX) keep everything
        return (j - i > nxt) | (i - j > pre)
    if sparse_mode == 1:
        return None
    if sparse_mode == 2:  # leftUpCausal: SDPA's is_causal
        return j > i
    if sparse_mode == 3:  # rightDownCausal: flash-attn's causal
        return j > i + (skv - sq)
    if sparse_mode == 4:  # band, origin bottom-right
        d = j - i - (skv - sq)
        return (d > nxt) | (-d > pre)
    raise EmulatorLimitation(f"{op}: sparse_mode {sparse_mode} (prefix / varlen split modes) is "
                             f"not modelled by the emulator")


def _attend(q, k, v, *, scale, pse, pse_before_scale, masked, row_correction):
    """q [B,N,Sq,D], k/v [B,Nkv,Skv,D], masked bool broadcastable to [B,N,Sq,Skv] (True = out).
    Returns out [B,N,Sq,Dv] fp32, row max and row sum [B,N,Sq] fp32."""
    n, nkv = q.shape[1], k.shape[1]
    kf, vf = k.float(), v.float()
    if n != nkv:  # GQA: query head h reads kv head h // (n / nkv)
        kf = kf.repeat_interleave(n // nkv, dim=1)
        vf = vf.repeat_interleave(n // nkv, dim=1)
    s = torch.matmul(q.float(), kf.transpose(-1, -2))
    if pse is not None and pse_before_scale:
        s = (s + pse.float()) * scale
    else:
        s = s * scale
        if pse is not None:
            s = s + pse.float()
    dead = None
    if masked is not None:
        masked = masked.expand(s.shape)
        s = s.masked_fill(masked, _MASK_FILL)
        dead = masked.all(dim=-1)
    mx = s.amax(dim=-1)
    p = torch.exp(s - mx[..., None])
    sm = p.sum(dim=-1)
    out = torch.matmul(p / sm[..., None], vf)
    if dead is not None and row_correction:
        out = out.masked_fill(dead[..., None], 0.0)
        mx = mx.masked_fill(dead, float("-inf"))
        sm = sm.masked_fill(dead, 0.0)
    return out, mx, sm


def _to_bnsd(op, t, layout, heads, name):
    """Return t as [B, N, S, D] given the layout string, checking ranks and head counts."""
    if layout in ("BSND", "BNSD"):
        if t.dim() != 4:
            _fail(op, f"input_layout {layout!r} needs 4-D {name}, got shape {tuple(t.shape)}")
        t = t.transpose(1, 2) if layout == "BSND" else t
    elif layout in ("BSH", "SBH"):
        if t.dim() != 3:
            _fail(op, f"input_layout {layout!r} needs 3-D {name}, got shape {tuple(t.shape)}")
        if layout == "SBH":
            t = t.transpose(0, 1)
        b, s, h = t.shape
        if heads is None or h % heads:
            _fail(op, f"{name} hidden size {h} is not divisible by its head count {heads}")
        t = t.reshape(b, s, heads, h // heads).transpose(1, 2)
    else:
        raise AssertionError(layout)
    return t


def _from_bnsd(t, layout):
    if layout == "BSND":
        return t.transpose(1, 2)
    if layout == "BNSD":
        return t
    b, n, s, d = t.shape
    t = t.transpose(1, 2).reshape(b, s, n * d)
    return t.transpose(0, 1) if layout == "SBH" else t


# Documented atten_mask dtypes: FA takes bool / uint8 only; FIA also takes int8.
_FA_MASK_DTYPES = (torch.bool, torch.uint8)
_FIA_MASK_DTYPES = (torch.bool, torch.int8, torch.uint8)


def _check_mask_dtype(op, atten_mask, allowed):
    if atten_mask is not None and atten_mask.dtype not in allowed:
        names = " or ".join(str(d).replace("torch.", "") for d in allowed)
        _fail(op, f"atten_mask must be {names} (1/True = masked out), got {atten_mask.dtype}")


class _Flags:
    def __init__(self, default: bool):
        self.allow_hf32 = default


class _NpuNamespace:
    """Stands for torch_npu.npu / torch.npu: device queries and the HF32 switches."""

    def __init__(self, soc: str, jit_compile: bool = False):
        self._soc = soc
        self._jit_compile = bool(jit_compile)   # torch_npu's default on A2/A3: False
        self.matmul = _Flags(False)   # documented default: matmul HF32 off
        self.conv = _Flags(True)      # documented default: conv HF32 ON (changes fp32 results)

    def set_compile_mode(self, jit_compile=False):
        self._jit_compile = bool(jit_compile)

    def is_jit_compile_false(self) -> bool:
        return not self._jit_compile

    def is_available(self):
        return True

    def device_count(self):
        return 1

    def get_device_name(self, index=0):
        return self._soc

    def get_cann_version(self, module="CANN"):
        return "emulated"


class _FiaNoBackward(torch.autograd.Function):
    """FIA is an inference op: the real one has no backward. Training through it must fail."""

    @staticmethod
    def forward(ctx, *tensors):
        return tuple(t.detach().clone() for t in tensors)

    @staticmethod
    def backward(ctx, *grads):
        raise NpuEmulatorError("npu_fused_infer_attention_score has no backward (inference only); "
                               "training must use npu_fusion_attention")


class EmulatedTorchNpu:
    """The torch_npu-like module object. Functions are static so their first argument keeps the
    documented name (`self`, `query`, `input`)."""

    __version__ = "emulated (torch_npu 2.14.0 documented semantics)"

    def __init__(self, soc: str = "Ascend910B3", jit_compile: bool = False):
        self.npu = _NpuNamespace(soc, jit_compile)
        npu, fused = self.npu, EmulatedTorchNpu.npu_rotary_mul

        @functools.wraps(fused)
        def npu_rotary_mul(input, r1, r2, rotary_mode='half', rotate=None):  # noqa: A002
            # Documented: under jit_compile=True only rotary_mode 'half' with D == 128 exists.
            if not npu.is_jit_compile_false() and (rotary_mode != "half" or input.shape[-1] != 128):
                _fail("npu_rotary_mul", f"rotary_mode {rotary_mode!r} with D={input.shape[-1]} is not "
                                        f"supported with jit_compile=True ('half' with D=128 only); "
                                        f"set torch_npu.npu.set_compile_mode(jit_compile=False)")
            return fused(input, r1, r2, rotary_mode, rotate)

        self.npu_rotary_mul = npu_rotary_mul

    # ------------------------------------------------------------------------- FA (training)
    @staticmethod
    def npu_fusion_attention(query, key, value, head_num, input_layout, pse=None, padding_mask=None,
                             atten_mask=None, scale=1., keep_prob=1., pre_tockens=2147483647,
                             next_tockens=2147483647, inner_precise=0, prefix=None,
                             actual_seq_qlen=None, actual_seq_kvlen=None, sparse_mode=0,
                             gen_mask_parallel=True, sync=False, softmax_layout=""):
        op = "npu_fusion_attention"
        _check_dtypes(op, _NPU_FLOATS, query=query, key=key, value=value, pse=pse)
        if not (query.dtype == key.dtype == value.dtype):
            _fail(op, f"query/key/value dtypes must match, got {query.dtype}/{key.dtype}/{value.dtype}")
        if pse is not None and pse.dtype != query.dtype:
            _fail(op, f"pse dtype {pse.dtype} must equal the query dtype {query.dtype}")
        if input_layout not in ("BSH", "SBH", "BSND", "BNSD", "TND"):
            _fail(op, f"input_layout {input_layout!r} is not supported (BSH, SBH, BSND, BNSD, TND)")
        if padding_mask is not None:
            _fail(op, "padding_mask is not supported yet (reserved argument)")
        if keep_prob != 1.0:
            raise EmulatorLimitation(f"{op}: dropout (keep_prob={keep_prob}) is not modelled")
        if prefix is not None:
            raise EmulatorLimitation(f"{op}: prefix sparse modes are not modelled")
        if inner_precise not in (0, 1, 2):
            _fail(op, f"inner_precise must be 0, 1 or 2, got {inner_precise}")
        if not isinstance(head_num, int) or head_num <= 0:
            _fail(op, f"head_num must be a positive int, got {head_num!r}")
        _check_mask_dtype(op, atten_mask, _FA_MASK_DTYPES)
        if sparse_mode not in range(0, 9):
            _fail(op, f"sparse_mode must be 0..8, got {sparse_mode}")
        if softmax_layout not in ("", "TND") or (softmax_layout == "TND" and input_layout != "TND"):
            _fail(op, f"softmax_layout {softmax_layout!r} is only allowed as 'TND' with input_layout TND")
        if input_layout == "TND":
            return _fa_varlen(query, key, value, head_num, pse, atten_mask, scale, pre_tockens,
                              next_tockens, inner_precise, actual_seq_qlen, actual_seq_kvlen,
                              sparse_mode, softmax_layout)
        if sparse_mode > 6:
            _fail(op, f"sparse_mode {sparse_mode} is only valid in the varlen (TND) layout")

        q = _to_bnsd(op, query, input_layout, head_num, "query")
        if q.shape[1] != head_num:
            _fail(op, f"head_num={head_num} does not match the query's N={q.shape[1]} for "
                      f"input_layout {input_layout!r} (shape {tuple(query.shape)})")
        d = q.shape[-1]
        kv_heads = None
        if input_layout in ("BSH", "SBH"):
            if key.dim() != 3 or key.shape[-1] % d:
                _fail(op, f"key shape {tuple(key.shape)} does not fit head dim {d}")
            kv_heads = key.shape[-1] // d
        k = _to_bnsd(op, key, input_layout, kv_heads, "key")
        v = _to_bnsd(op, value, input_layout, kv_heads, "value")
        b, n, sq, _ = q.shape
        nkv, skv = k.shape[1], k.shape[2]
        if k.shape[0] != b or v.shape[0] != b:
            _fail(op, "query, key and value must have the same batch size")
        if k.shape[:3] != v.shape[:3]:
            _fail(op, f"key {tuple(key.shape)} and value {tuple(value.shape)} shapes must match")
        if k.shape[-1] != d or v.shape[-1] > d:
            _fail(op, f"head dims must satisfy Dq == Dk >= Dv (got {d}, {k.shape[-1]}, {v.shape[-1]})")
        if n % nkv:
            _fail(op, f"query heads ({n}) must be a multiple of key/value heads ({nkv})")
        _check_fa_limits(op, n, d)
        if actual_seq_qlen is not None or actual_seq_kvlen is not None:
            raise EmulatorLimitation(f"{op}: actual_seq_qlen / actual_seq_kvlen are varlen (TND) "
                                     f"arguments; the emulator does not model them for {input_layout}")
        masked = _fa_mask(op, atten_mask, sparse_mode, b, n, sq, skv, pre_tockens, next_tockens)
        if pse is not None:
            ok = pse.dim() == 4 and pse.shape[-1] == skv and pse.shape[1] == n and (
                (pse.shape[0] == b and pse.shape[2] in (sq, 1)) or (pse.shape[0] == 1 and pse.shape[2] == sq))
            if not ok:
                _fail(op, f"pse shape {tuple(pse.shape)} must be BNSS, BN1Skv or 1NSS for "
                          f"B={b}, N={n}, Sq={sq}, Skv={skv}")
        # sparse_mode 3 with Sq > Skv leaves whole rows masked: the op turns row correction on.
        row_corr = inner_precise == 2 or (sparse_mode == 3 and sq > skv)
        out, mx, sm = _attend(q, k, v, scale=scale, pse=pse, pse_before_scale=True, masked=masked,
                              row_correction=row_corr)
        out = _from_bnsd(out.to(query.dtype), input_layout)
        mx8 = mx[..., None].expand(*mx.shape, 8).contiguous()
        sm8 = sm[..., None].expand(*sm.shape, 8).contiguous()
        return out, mx8, sm8, query.new_empty(0), 0, 0, 0

    # ------------------------------------------------------------------------ FIA (inference)
    @staticmethod
    def npu_fused_infer_attention_score(query, key, value, *, pse_shift=None, atten_mask=None,
                                        actual_seq_lengths=None, actual_seq_lengths_kv=None,
                                        dequant_scale1=None, quant_scale1=None, dequant_scale2=None,
                                        quant_scale2=None, quant_offset2=None, antiquant_scale=None,
                                        antiquant_offset=None, block_table=None, query_padding_size=None,
                                        kv_padding_size=None, key_antiquant_scale=None,
                                        key_antiquant_offset=None, value_antiquant_scale=None,
                                        value_antiquant_offset=None, key_shared_prefix=None,
                                        value_shared_prefix=None, actual_shared_prefix_len=None,
                                        query_rope=None, key_rope=None, key_rope_antiquant_scale=None,
                                        num_heads=1, scale=1.0, pre_tokens=2147483647,
                                        next_tokens=2147483647, input_layout="BSH",
                                        num_key_value_heads=0, sparse_mode=0, inner_precise=0,
                                        block_size=0, antiquant_mode=0, softmax_lse_flag=False,
                                        key_antiquant_mode=0, value_antiquant_mode=0):
        op = "npu_fused_infer_attention_score"
        unmodelled = dict(dequant_scale1=dequant_scale1, quant_scale1=quant_scale1,
                          dequant_scale2=dequant_scale2, quant_scale2=quant_scale2,
                          quant_offset2=quant_offset2, antiquant_scale=antiquant_scale,
                          antiquant_offset=antiquant_offset, block_table=block_table,
                          query_padding_size=query_padding_size, kv_padding_size=kv_padding_size,
                          key_antiquant_scale=key_antiquant_scale,
                          key_antiquant_offset=key_antiquant_offset,
                          value_antiquant_scale=value_antiquant_scale,
                          value_antiquant_offset=value_antiquant_offset,
                          key_shared_prefix=key_shared_prefix, value_shared_prefix=value_shared_prefix,
                          actual_shared_prefix_len=actual_shared_prefix_len, query_rope=query_rope,
                          key_rope=key_rope, key_rope_antiquant_scale=key_rope_antiquant_scale,
                          pse_shift=pse_shift)
        used = [n for n, t in unmodelled.items() if t is not None]
        if used:
            # pse_shift included: the docs do not say whether FIA adds it before or after the scale
            raise EmulatorLimitation(f"{op}: {used} not modelled by the emulator")
        for t, name in ((query, "query"), (key, "key"), (value, "value")):
            if t.dtype == torch.float32:
                _fail(op, f"{name} is float32; FIA supports float16, bfloat16 and int8 only "
                          f"(use npu_fusion_attention for fp32)")
        _check_dtypes(op, (torch.float16, torch.bfloat16), query=query, key=key, value=value)
        if not (query.dtype == key.dtype == value.dtype):
            _fail(op, "query/key/value dtypes must match")
        for t, name in ((query, "query"), (key, "key"), (value, "value"), (atten_mask, "atten_mask")):
            if t is not None and not t.is_contiguous():
                _fail(op, f"{name} is not contiguous (FIA does not support non-contiguous tensors)")
        if input_layout not in ("BSH", "BSND", "BNSD", "BNSD_BSND", "TND"):
            _fail(op, f"input_layout {input_layout!r} is not supported (BSH, BSND, BNSD, BNSD_BSND, TND)")
        if input_layout == "TND":
            raise EmulatorLimitation(f"{op}: the TND layout (bf16, D=192 only) is not modelled")
        if num_heads <= 0:
            _fail(op, f"num_heads should be greater than 0, but got {num_heads}")
        nkv_arg = num_heads if num_key_value_heads == 0 else num_key_value_heads
        if num_heads % nkv_arg or num_heads // nkv_arg > 64:
            _fail(op, f"num_heads ({num_heads}) must be a multiple of num_key_value_heads ({nkv_arg}) "
                      f"with a ratio of at most 64")
        if sparse_mode not in (0, 1, 2, 3, 4):
            _fail(op, f"sparse_mode {sparse_mode} is not supported (0, 1, 2, 3, 4)")
        _check_mask_dtype(op, atten_mask, _FIA_MASK_DTYPES)
        in_layout = "BNSD" if input_layout == "BNSD_BSND" else input_layout
        q = _to_bnsd(op, query, in_layout, num_heads, "query")
        k = _to_bnsd(op, key, in_layout, nkv_arg, "key")
        v = _to_bnsd(op, value, in_layout, nkv_arg, "value")
        if q.shape[1] != num_heads:
            _fail(op, f"num_heads={num_heads} does not match the query's N={q.shape[1]} "
                      f"({input_layout}, shape {tuple(query.shape)})")
        if k.shape[1] != nkv_arg:
            _fail(op, f"num_key_value_heads={num_key_value_heads} does not match the key's N={k.shape[1]}")
        b, n, sq, d = q.shape
        skv = k.shape[2]
        if k.shape != v.shape:
            _fail(op, f"key {tuple(key.shape)} and value {tuple(value.shape)} shapes must be identical")
        if sq > 1 and d % 16:
            _fail(op, f"head dim {d} must be 16-aligned for float16/bfloat16 inputs")
        if n > 256 or d > 512:
            _fail(op, f"N={n} / D={d} out of range (N <= 256, D <= 512)")
        if sq > 1 and in_layout in ("BSH", "BSND") and n * d >= 65535:
            _fail(op, f"N*D = {n * d} must be < 65535 for input_layout {input_layout}")
        if sq == 1 and inner_precise not in (0, 1):
            _fail(op, f"inner_precise {inner_precise} is not supported when Q_S == 1 (0 or 1 only)")
        if inner_precise not in (0, 1, 2, 3):
            _fail(op, f"inner_precise must be 0..3, got {inner_precise}")
        i = torch.arange(sq, device=query.device)[:, None]
        j = torch.arange(skv, device=query.device)[None, :]
        masked = None
        if sq > 1:  # with Q_S == 1 (incremental branch) sparse_mode and pre/next tokens are ignored
            if sparse_mode in (2, 3, 4):
                if atten_mask is None or not _compressed_causal_ok(atten_mask):
                    _fail(op, f"sparse_mode {sparse_mode} needs the compressed lower-triangular mask: "
                              f"shape (2048, 2048) / (1, 2048, 2048) / (1, 1, 2048, 2048), True above "
                              f"the diagonal; got {None if atten_mask is None else tuple(atten_mask.shape)}")
                masked = _sparse_masked(op, sparse_mode, sq, skv, pre_tokens, next_tokens, True,
                                        query.device)[None, None]
            elif atten_mask is not None:
                masked = _fia_user_mask(op, atten_mask, b, sq, skv)
                if sparse_mode == 0:
                    band = (j - i > next_tokens) | (i - j > pre_tokens)
                    masked = masked | band[None, None]
        elif atten_mask is not None and sparse_mode not in (2, 3, 4):
            # Q_S == 1: a compressed sparse mask is ignored together with its sparse_mode, so a
            # causal single query silently attends to every key.
            masked = _fia_user_mask(op, atten_mask, b, sq, skv)
        if actual_seq_lengths_kv is not None:
            kvl = _per_batch(op, "actual_seq_lengths_kv", actual_seq_lengths_kv, b, skv)
            beyond = j[None] >= torch.tensor(kvl, device=query.device).view(b, 1, 1)  # B 1 Skv
            beyond = beyond[:, None]
            masked = beyond if masked is None else masked | beyond
        out, mx, sm = _attend(q, k, v, scale=scale, pse=None, pse_before_scale=False, masked=masked,
                              row_correction=bool(inner_precise & 2))
        lse = mx + torch.log(sm)
        if actual_seq_lengths is not None and sq > 1:
            ql = _per_batch(op, "actual_seq_lengths", actual_seq_lengths, b, sq)
            not_computed = (i.view(1, 1, sq) >= torch.tensor(ql, device=query.device).view(b, 1, 1))
            # The docs do not say what is written there: poison it.
            out = out.masked_fill(not_computed[..., None], float("nan"))
            lse = lse.masked_fill(not_computed, float("nan"))
        out = out.to(query.dtype)
        out = out.transpose(1, 2) if input_layout == "BNSD_BSND" else _from_bnsd(out, in_layout)
        lse_out = lse[..., None].contiguous() if softmax_lse_flag else torch.zeros(1)
        if torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value)):
            out, lse_out = _FiaNoBackward.apply(out, lse_out)
        return out, lse_out

    # ------------------------------------------------------------------------ pointwise ops
    @staticmethod
    def npu_rms_norm(self, gamma, epsilon=1e-06):
        op = "npu_rms_norm"
        _check_dtypes(op, _NPU_FLOATS, self=self, gamma=gamma)
        if gamma.dtype != self.dtype:
            _fail(op, f"gamma dtype {gamma.dtype} must equal the input dtype {self.dtype}")
        if not (2 <= self.dim() <= 8) or not (1 <= gamma.dim() <= 8):
            _fail(op, f"input must be 2-8-D, got {self.dim()}-D")
        if tuple(self.shape[self.dim() - gamma.dim():]) != tuple(gamma.shape):
            _fail(op, f"gamma shape {tuple(gamma.shape)} must equal the input's trailing dims "
                      f"{tuple(self.shape[self.dim() - gamma.dim():])}")
        dims = tuple(range(self.dim() - gamma.dim(), self.dim()))
        xf = self.float()
        rstd = torch.rsqrt(xf.pow(2).mean(dim=dims, keepdim=True) + epsilon)
        # fused: gamma applied in fp32, one rounding at the end
        return (xf * rstd * gamma.float()).to(self.dtype), rstd

    @staticmethod
    def npu_rotary_mul(input, r1, r2, rotary_mode='half', rotate=None):  # noqa: A002 - doc name
        op = "npu_rotary_mul"
        _check_dtypes(op, _NPU_FLOATS, input=input, r1=r1, r2=r2)
        if rotate is not None:
            raise EmulatorLimitation(f"{op}: the rotate matrix form is not modelled")
        if rotary_mode not in ("half", "interleave"):
            _fail(op, f"rotary_mode must be 'half' or 'interleave', got {rotary_mode!r}")
        if input.dim() != 4 or r1.dim() != 4 or r2.dim() != 4:
            _fail(op, f"input, r1 and r2 must be 4-D, got {input.dim()}, {r1.dim()}, {r2.dim()}")
        if r1.dtype != input.dtype or r2.dtype != input.dtype:
            _fail(op, f"r1/r2 dtype ({r1.dtype}/{r2.dtype}) must equal the input dtype {input.dtype}")
        d = input.shape[-1]
        if d % 2 or d >= 896:
            _fail(op, f"head dim D={d} must be even and < 896")
        for name, r in (("r1", r1), ("r2", r2)):
            if r.shape[-1] != d:
                _fail(op, f"{name} last dim {r.shape[-1]} must equal D={d} (full-width cos/sin)")
            try:
                torch.broadcast_shapes(r.shape, input.shape)
            except RuntimeError:
                _fail(op, f"{name} shape {tuple(r.shape)} does not broadcast to input {tuple(input.shape)}")
            if tuple(torch.broadcast_shapes(r.shape, input.shape)) != tuple(input.shape):
                _fail(op, f"{name} shape {tuple(r.shape)} is larger than input {tuple(input.shape)}")
            if rotary_mode == "interleave" and sum(s != 1 for s in r.shape[:3]) > 1:
                _fail(op, f"interleave mode takes {name} as 11SD / 1S1D / S11D only, got {tuple(r.shape)}")
        xf = input.float()
        if rotary_mode == "half":
            x1, x2 = xf.chunk(2, dim=-1)
            x_new = torch.cat((-x2, x1), dim=-1)
        else:
            x1, x2 = xf[..., 0::2], xf[..., 1::2]
            x_new = torch.stack((-x2, x1), dim=-1).flatten(-2)
        return (r1.float() * xf + r2.float() * x_new).to(input.dtype)

    @staticmethod
    def npu_swiglu(self, dim=-1):
        op = "npu_swiglu"
        _check_dtypes(op, _NPU_FLOATS, self=self)
        if not self.is_contiguous():   # op-plugin docs: 不支持非连续的Tensor
            _fail(op, "input is not contiguous (non-contiguous tensors are not supported)")
        if self.shape[dim] % 2:
            _fail(op, f"size {self.shape[dim]} along dim {dim} must be even")
        a, b = self.float().chunk(2, dim=dim)  # swish(A) * B, A = first half
        return (F.silu(a) * b).to(self.dtype)

    @staticmethod
    def npu_gelu(self, *, approximate="none"):
        op = "npu_gelu"
        _check_dtypes(op, _NPU_FLOATS, self=self)
        if approximate not in ("none", "tanh"):
            _fail(op, f"approximate must be 'none' or 'tanh', got {approximate!r}")
        return F.gelu(self.float(), approximate=approximate).to(self.dtype)

    @staticmethod
    def native_gelu(input, approximate="none"):  # noqa: A002
        """torch.nn.functional.gelu on the NPU device: ignores `approximate`, computes tanh."""
        return F.gelu(input, approximate="tanh")


# ----------------------------------------------------------------------------- helpers
def _per_batch(op, name, lengths, b, s_max):
    lengths = [int(x) for x in lengths]
    if len(lengths) == 1:
        lengths = lengths * b
    elif len(lengths) >= b:
        lengths = lengths[:b]
    else:
        _fail(op, f"{name} has {len(lengths)} entries; pass 1 or at least B={b}")
    for x in lengths:
        if x < 0 or x > s_max:
            _fail(op, f"{name} entry {x} out of range [0, {s_max}]")
    return lengths


def _fia_user_mask(op, m, b, sq, skv):
    """FIA sparse 0/1 mask shapes: (Q_S,KV_S), (1,Q_S,KV_S), (1,1,Q_S,KV_S), (B,1,Q_S,KV_S);
    (B,KV_S) when Q_S == 1. Sizes may be rounded up (alignment); the extra is ignored."""
    shape = tuple(m.shape)
    if sq == 1 and m.dim() == 2 and shape[0] == b and shape[1] >= skv:
        return m[:, None, None, :skv].bool()
    ok = (m.dim() == 2) or (m.dim() == 3 and shape[0] == 1) or (
        m.dim() == 4 and shape[1] == 1 and shape[0] in (1, b))
    if not ok or shape[-2] < sq or shape[-1] < skv:
        _fail(op, f"atten_mask shape {shape} is not one of (Q_S,KV_S), (1,Q_S,KV_S), (1,1,Q_S,KV_S), "
                  f"(B,1,Q_S,KV_S) with Q_S={sq}, KV_S={skv}, B={b} (per-head masks are not supported)")
    m4 = m.reshape((1,) * (4 - m.dim()) + shape)
    return m4[..., :sq, :skv].bool()


def _fa_mask(op, atten_mask, sparse_mode, b, n, sq, skv, pre, nxt):
    """FA (non-varlen) masked positions, bool broadcastable to [B,N,Sq,Skv], or None."""
    if atten_mask is None:
        # Documented: "当atten_mask输入为None时, sparse_mode, pre_tockens, next_tockens参数不生效,
        # 固定为全计算" -- a causal mode without its compressed mask silently attends to every key.
        return None
    if sparse_mode in (2, 3, 4):
        if not _compressed_causal_ok(atten_mask):
            _fail(op, f"sparse_mode {sparse_mode} expects the compressed 2048x2048 mask with True above "
                      f"the diagonal (torch.ones(2048, 2048).triu(1).bool()); got shape "
                      f"{tuple(atten_mask.shape)}")
        return _sparse_masked(op, sparse_mode, sq, skv, pre, nxt, True, atten_mask.device)[None, None]
    shape = tuple(atten_mask.shape)
    ok = shape[-2:] == (sq, skv) and (
        atten_mask.dim() == 2 or (atten_mask.dim() == 4 and shape[:2] in ((b, n), (b, 1), (1, 1))))
    if not ok:
        _fail(op, f"atten_mask shape {shape} must be BNSS, B1SS, 11SS or SS with B={b}, N={n}, "
                  f"Sq={sq}, Skv={skv} (does sparse_mode {sparse_mode} match the mask?)")
    m = atten_mask.bool()
    m = m.reshape((1, 1) + shape) if m.dim() == 2 else m
    band = _sparse_masked(op, sparse_mode, sq, skv, pre, nxt, True, m.device)
    return m if band is None else m | band[None, None]


def _check_fa_limits(op, n, d):
    if not 1 <= d <= 768:
        _fail(op, f"head dim D={d} out of range (1..768)")
    if not 1 <= n <= 256:
        _fail(op, f"query heads N={n} out of range (1..256)")


def _cumulative(op, name, seq, total):
    seq = [int(x) for x in seq]
    if not seq:
        _fail(op, f"{name} must not be empty in the TND layout")
    prev = 0
    for x in seq:
        if x < prev:
            _fail(op, f"{name} must be cumulative (non-decreasing), got {seq}")
        prev = x
    if seq[-1] != total:
        _fail(op, f"{name} must be cumulative lengths ending at T={total} (no leading 0), got {seq}")
    return seq


def _fa_varlen(query, key, value, head_num, pse, atten_mask, scale, pre, nxt, inner_precise,
               actual_seq_qlen, actual_seq_kvlen, sparse_mode, softmax_layout):
    op = "npu_fusion_attention"
    if actual_seq_qlen is None or actual_seq_kvlen is None:
        _fail(op, "input_layout TND needs actual_seq_qlen and actual_seq_kvlen")
    if query.dim() != 3 or key.dim() != 3 or value.dim() != 3:
        _fail(op, "input_layout TND needs 3-D query, key and value [T, N, D]")
    if query.shape[1] != head_num:
        _fail(op, f"head_num={head_num} does not match the query's N={query.shape[1]}")
    if pse is not None:
        raise EmulatorLimitation(f"{op}: pse in the TND layout is not modelled")
    n, nkv = query.shape[1], key.shape[1]
    if n % nkv or key.shape[:2] != value.shape[:2]:
        _fail(op, f"head counts do not fit: query N={n}, key {tuple(key.shape)}, value {tuple(value.shape)}")
    _check_fa_limits(op, n, query.shape[-1])
    qc = _cumulative(op, "actual_seq_qlen", actual_seq_qlen, query.shape[0])
    kc = _cumulative(op, "actual_seq_kvlen", actual_seq_kvlen, key.shape[0])
    if len(qc) != len(kc):
        _fail(op, f"actual_seq_qlen and actual_seq_kvlen must have the same length ({len(qc)} vs {len(kc)})")
    qlens = [b - a for a, b in zip([0] + qc[:-1], qc)]
    kvlens = [b - a for a, b in zip([0] + kc[:-1], kc)]
    if sparse_mode in (5,):
        _fail(op, "sparse_mode 5 is not supported in the varlen layout")
    user = None
    if atten_mask is not None:
        if sparse_mode in (2, 3, 4, 7, 8):
            if not _compressed_causal_ok(atten_mask):
                _fail(op, f"sparse_mode {sparse_mode} expects the compressed 2048x2048 mask")
        elif sparse_mode in (0, 1):
            if atten_mask.dim() != 2 or tuple(atten_mask.shape) != (max(qlens), max(kvlens)):
                _fail(op, f"varlen atten_mask must be SS = (maxSq, maxSkv) = ({max(qlens)}, {max(kvlens)}), "
                          f"got {tuple(atten_mask.shape)}")
            user = atten_mask.bool()
            if user.all(dim=-1).any():
                _fail(op, "varlen atten_mask must not mask a whole row (padding rows are not supported)")
        else:
            raise EmulatorLimitation(f"{op}: sparse_mode {sparse_mode} is not modelled")
    # atten_mask None: sparse_mode and pre/next tockens have no effect, full attention (documented).
    outs, mxs, sms = [], [], []
    q0 = k0 = 0
    for ql, kl in zip(qlens, kvlens):
        if ql == 0:
            q0, k0 = q0 + ql, k0 + kl
            continue
        q = query[q0:q0 + ql].transpose(0, 1)[None]
        k = key[k0:k0 + kl].transpose(0, 1)[None]
        v = value[k0:k0 + kl].transpose(0, 1)[None]
        masked = None
        if atten_mask is not None:
            if user is not None:
                masked = user[:ql, :kl][None, None]
                band = _sparse_masked(op, sparse_mode, ql, kl, pre, nxt, True, query.device)
                masked = masked if band is None else masked | band[None, None]
            else:
                mode = {7: 3, 8: 2}.get(sparse_mode, sparse_mode)
                masked = _sparse_masked(op, mode, ql, kl, pre, nxt, True, query.device)[None, None]
        out, mx, sm = _attend(q, k, v, scale=scale, pse=None, pse_before_scale=True, masked=masked,
                              row_correction=inner_precise == 2)
        outs.append(out[0].transpose(0, 1))        # [ql, N, Dv]
        mxs.append(mx[0].transpose(0, 1))          # [ql, N]
        sms.append(sm[0].transpose(0, 1))
        q0, k0 = q0 + ql, k0 + kl
    dv = value.shape[-1]
    out = torch.cat(outs) if outs else query.new_zeros(0, n, dv, dtype=torch.float32)
    mx = torch.cat(mxs) if mxs else query.new_zeros(0, n, dtype=torch.float32)
    sm = torch.cat(sms) if sms else query.new_zeros(0, n, dtype=torch.float32)
    mx8 = mx[..., None].expand(*mx.shape, 8)
    sm8 = sm[..., None].expand(*sm.shape, 8)
    if softmax_layout != "TND":  # documented default: NTD
        mx8, sm8 = mx8.transpose(0, 1), sm8.transpose(0, 1)
    return out.to(query.dtype), mx8.contiguous(), sm8.contiguous(), query.new_empty(0), 0, 0, 0


def emulated_torch_npu(soc: str = "Ascend910B3", jit_compile: bool = False) -> EmulatedTorchNpu:
    return EmulatedTorchNpu(soc, jit_compile)


__all__ = ["EmulatedTorchNpu", "NpuEmulatorError", "EmulatorLimitation", "DOC_SIGNATURES",
           "emulated_torch_npu"]
