"""The torch_npu emulator: documented signatures, documented semantics, and it raises where the
real op would. (Spec: torch_npu 2.14.0 _op_plugin_docs.py and the meta registrations.)"""
from __future__ import annotations

import inspect
import math
import os
import re

import pytest
import torch
import torch.nn.functional as F

from phyx_npu.emulator import DOC_SIGNATURES, EmulatedTorchNpu, NpuEmulatorError

E = EmulatedTorchNpu()
FA = E.npu_fusion_attention
FIA = E.npu_fused_infer_attention_score
DOCS = "/tmp/tnpu/torch_npu/_op_plugin_docs.py"


def _parse(proto: str):
    """'name(Type a, Type b=1, *, Type c=None)' -> [(name, default|EMPTY, kw_only)]."""
    body = proto[proto.index("(") + 1: proto.rindex(")")]
    out, kw_only = [], False
    for part in (p.strip() for p in body.split(",")):
        if part == "*":
            kw_only = True
            continue
        decl, _, default = part.partition("=")
        name = decl.split()[-1]
        out.append((name, default.strip() if default else inspect.Parameter.empty, kw_only))
    return out


def _same_default(doc, actual):
    if doc is inspect.Parameter.empty:
        return actual is inspect.Parameter.empty
    lit = {"None": None, "True": True, "False": False, '""': "", "'half'": "half", '"none"': "none",
           '"BSH"': "BSH"}
    want = lit[doc] if doc in lit else float(doc) if re.search(r"[.e]", doc) else int(doc)
    return actual == want and type(actual) in (type(want), int if isinstance(want, float) else type(want))


@pytest.mark.parametrize("op", sorted(DOC_SIGNATURES))
def test_signatures_match_the_docs(op):
    params = list(inspect.signature(getattr(EmulatedTorchNpu, op)).parameters.values())
    doc = _parse(DOC_SIGNATURES[op])
    assert [p.name for p in params] == [d[0] for d in doc]
    for p, (name, default, kw_only) in zip(params, doc):
        assert (p.kind == inspect.Parameter.KEYWORD_ONLY) == kw_only, name
        assert _same_default(default, p.default), (name, default, p.default)


@pytest.mark.skipif(not os.path.exists(DOCS), reason="torch_npu docs not unpacked here")
def test_doc_signatures_are_quoted_from_the_wheel():
    text = open(DOCS, encoding="utf-8").read()
    for op, proto in DOC_SIGNATURES.items():
        if op != "npu_gelu":   # npu_gelu's prototype lives in the meta registrations
            assert proto in text, op


def _bnsd(B=1, N=2, Sq=5, Skv=6, D=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, N, s, D, generator=g).to(dtype) for s in (Sq, Skv, Skv)]


def _manual(q, k, v, scale, masked=None, pse=None):
    s = q.float() @ k.float().transpose(-1, -2)
    s = (s + pse.float()) * scale if pse is not None else s * scale
    if masked is not None:
        s = s.masked_fill(masked, float("-inf"))
    return torch.softmax(s, -1) @ v.float()


# ------------------------------------------------------------------------------ semantics
def test_fa_mask_true_means_masked_out_and_pse_is_added_before_the_scale():
    q, k, v = _bnsd()
    masked = torch.rand(5, 6, generator=torch.Generator().manual_seed(1)) < 0.3
    masked[:, 0] = False
    pse = torch.randn(1, 2, 5, 6)
    out = FA(q, k, v, 2, "BNSD", pse=pse, atten_mask=masked, scale=0.3)[0]
    torch.testing.assert_close(out, _manual(q, k, v, 0.3, masked, pse), atol=1e-5, rtol=1e-5)


def test_fa_scale_defaults_to_one():
    q, k, v = _bnsd()
    torch.testing.assert_close(FA(q, k, v, 2, "BNSD")[0], _manual(q, k, v, 1.0), atol=1e-5, rtol=1e-5)


def test_fa_softmax_stats_shapes_and_lse():
    q, k, v = _bnsd()
    _, mx, sm, *_ = FA(q, k, v, 2, "BNSD", scale=0.25)
    assert mx.shape == (1, 2, 5, 8) and sm.shape == (1, 2, 5, 8) and mx.dtype == torch.float32
    lse = torch.logsumexp(q @ k.transpose(-1, -2) * 0.25, -1)
    torch.testing.assert_close(mx[..., 0] + sm[..., 0].log(), lse, atol=1e-5, rtol=1e-5)


def test_sparse_mode_2_is_top_left_and_3_bottom_right():
    q, k, v = _bnsd(Sq=4, Skv=7)
    comp = torch.ones(2048, 2048, dtype=torch.bool).triu(1)
    i, j = torch.arange(4)[:, None], torch.arange(7)[None]
    top_left = FA(q, k, v, 2, "BNSD", atten_mask=comp, sparse_mode=2, scale=0.3)[0]
    bottom_right = FA(q, k, v, 2, "BNSD", atten_mask=comp, sparse_mode=3, scale=0.3)[0]
    torch.testing.assert_close(top_left, _manual(q, k, v, 0.3, j > i), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bottom_right, _manual(q, k, v, 0.3, j > i + 3), atol=1e-5, rtol=1e-5)


def test_pre_tockens_band_cuts_attention():
    # The dispatcher bug DESIGN.md warns about: pre_tockens=65536 cuts attention beyond 65,536
    # tokens. Shown here at small scale: a band limit changes the answer.
    q, k, v = _bnsd(Sq=6, Skv=6)
    none = torch.zeros(6, 6, dtype=torch.bool)
    full = FA(q, k, v, 2, "BNSD", atten_mask=none, scale=0.3)[0]
    band = FA(q, k, v, 2, "BNSD", atten_mask=none, scale=0.3, pre_tockens=2)[0]
    assert not torch.allclose(full, band)
    torch.testing.assert_close(full, _manual(q, k, v, 0.3), atol=1e-5, rtol=1e-5)


def test_fully_masked_rows_need_inner_precise_2():
    q, k, v = _bnsd()
    masked = torch.zeros(5, 6, dtype=torch.bool)
    masked[2] = True
    lossy = FA(q, k, v, 2, "BNSD", atten_mask=masked, scale=0.3)[0]
    fixed = FA(q, k, v, 2, "BNSD", atten_mask=masked, scale=0.3, inner_precise=2)[0]
    assert lossy[:, :, 2].abs().sum() > 0            # garbage: a uniform average of V
    assert fixed[:, :, 2].abs().sum() == 0


def test_fa_tnd_takes_cumulative_lengths_and_softmax_layout():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(5, 2, 16, generator=g) for _ in range(3))
    out, mx, *_ = FA(q, k, v, 2, "TND", scale=0.5, actual_seq_qlen=[2, 5], actual_seq_kvlen=[2, 5])
    assert mx.shape == (2, 5, 8)        # documented default NTD
    _, mx_tnd, *_ = FA(q, k, v, 2, "TND", scale=0.5, actual_seq_qlen=[2, 5], actual_seq_kvlen=[2, 5],
                       softmax_layout="TND")
    assert mx_tnd.shape == (5, 2, 8)
    seg = _manual(q[2:].transpose(0, 1)[None], k[2:].transpose(0, 1)[None], v[2:].transpose(0, 1)[None], 0.5)
    torch.testing.assert_close(out[2:], seg[0].transpose(0, 1), atol=1e-5, rtol=1e-5)
    with pytest.raises(NpuEmulatorError, match="cumulative"):
        FA(q, k, v, 2, "TND", scale=0.5, actual_seq_qlen=[2, 3], actual_seq_kvlen=[2, 3])  # per-batch


def test_fia_per_batch_lengths_lse_and_gqa():
    q, k, v = _bnsd(B=2, N=4, Sq=3, Skv=6, dtype=torch.bfloat16)
    k, v = k[:, :2].contiguous(), v[:, :2].contiguous()
    out, lse = FIA(q, k, v, num_heads=4, num_key_value_heads=2, input_layout="BNSD", scale=0.3,
                   actual_seq_lengths_kv=[6, 4], softmax_lse_flag=True)
    assert lse.shape == (2, 4, 3, 1) and lse.dtype == torch.float32
    kk = k.repeat_interleave(2, 1)
    vv = v.repeat_interleave(2, 1)
    masked = torch.zeros(2, 1, 1, 6, dtype=torch.bool)
    masked[1, ..., 4:] = True
    torch.testing.assert_close(out.float(), _manual(q, kk, vv, 0.3, masked), atol=2e-2, rtol=2e-2)


def test_fia_single_query_ignores_sparse_mode():
    q, k, v = _bnsd(Sq=1, Skv=6, dtype=torch.float16)
    comp = torch.ones(2048, 2048, dtype=torch.bool).triu(1)
    out = FIA(q, k, v, num_heads=2, input_layout="BNSD", scale=0.3, atten_mask=comp, sparse_mode=2)[0]
    torch.testing.assert_close(out.float(), _manual(q, k, v, 0.3), atol=2e-3, rtol=2e-3)


def test_native_gelu_ignores_approximate_but_npu_gelu_does_not():
    x = torch.linspace(-4, 4, 101)
    assert torch.equal(E.native_gelu(x, approximate="none"), F.gelu(x, approximate="tanh"))
    torch.testing.assert_close(E.npu_gelu(x, approximate="none"), F.gelu(x))
    assert not torch.allclose(E.npu_gelu(x, approximate="none"), E.npu_gelu(x, approximate="tanh"),
                              atol=1e-5, rtol=0)


def test_pointwise_semantics():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 8, generator=g)
    a, b = x.chunk(2, -1)
    torch.testing.assert_close(E.npu_swiglu(x), F.silu(a) * b)
    w = torch.rand(8, generator=g)
    y, rstd = E.npu_rms_norm(x, w, epsilon=1e-6)
    assert rstd.shape == (2, 3, 1)
    torch.testing.assert_close(y, x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w)
    xr = torch.randn(1, 3, 2, 8, generator=g)
    r1, r2 = torch.rand(1, 3, 1, 8, generator=g), torch.rand(1, 3, 1, 8, generator=g)
    x1, x2 = xr.chunk(2, -1)
    torch.testing.assert_close(E.npu_rotary_mul(xr, r1, r2), r1 * xr + r2 * torch.cat((-x2, x1), -1))


# ------------------------------------------------------------------------------ rejections
def _raises(fn, match):
    with pytest.raises(NpuEmulatorError, match=match):
        fn()


def test_rejects_bad_layout_and_head_counts():
    q, k, v = _bnsd()
    _raises(lambda: FA(q, k, v, 2, "BNDS", scale=0.3), "input_layout")
    _raises(lambda: FA(q, k, v, 3, "BNSD", scale=0.3), "head_num")
    _raises(lambda: FA(q, k, v, 2, "BSH", scale=0.3), "3-D")
    qb, kb, vb = _bnsd(dtype=torch.bfloat16)
    _raises(lambda: FIA(qb, kb, vb, num_heads=2, input_layout="BNSD_X"), "input_layout")
    _raises(lambda: FIA(qb, kb, vb, num_heads=4, input_layout="BNSD"), "num_heads")
    _raises(lambda: FIA(qb, kb, vb, num_heads=2, num_key_value_heads=1, input_layout="BNSD"),
            "num_key_value_heads")


def test_rejects_masks_of_wrong_dtype_shape_or_mode():
    q, k, v = _bnsd()
    _raises(lambda: FA(q, k, v, 2, "BNSD", atten_mask=torch.zeros(5, 6)), "bool or uint8")
    _raises(lambda: FA(q, k, v, 2, "BNSD", atten_mask=torch.zeros(6, 5, dtype=torch.bool)), "shape")
    _raises(lambda: FA(q, k, v, 2, "BNSD", atten_mask=torch.zeros(5, 6, dtype=torch.bool), sparse_mode=2),
            "compressed")
    _raises(lambda: FA(q, k, v, 2, "BNSD", atten_mask=torch.zeros(5, 6, dtype=torch.int8)), "bool or uint8")
    lower = torch.ones(2048, 2048, dtype=torch.bool).tril(-1)   # the mask with the wrong meaning
    _raises(lambda: FA(q, k, v, 2, "BNSD", atten_mask=lower, sparse_mode=2), "compressed")
    _raises(lambda: FA(q, k, v, 2, "BNSD", atten_mask=torch.ones(2048, 2048, dtype=torch.bool).triu(1)),
            "shape")   # compressed mask given without sparse_mode 2/3/4
    _raises(lambda: FA(q, k, v, 2, "BNSD", pse=torch.zeros(2, 5, 6)), "pse shape")
    qb, kb, vb = _bnsd(dtype=torch.bfloat16)
    _raises(lambda: FIA(qb, kb, vb, num_heads=2, input_layout="BNSD",
                        atten_mask=torch.zeros(1, 2, 5, 6, dtype=torch.bool)), "per-head")


def test_rejects_float64_complex_and_fia_fp32():
    q, k, v = _bnsd()
    _raises(lambda: FA(q.double(), k.double(), v.double(), 2, "BNSD"), "float64")
    _raises(lambda: FA(q.to(torch.complex64), k, v, 2, "BNSD"), "complex64")
    _raises(lambda: FIA(q, k, v, num_heads=2, input_layout="BNSD"), "float32")
    _raises(lambda: E.npu_rms_norm(q.double(), torch.ones(16, dtype=torch.float64)), "float64")
    _raises(lambda: E.npu_gelu(q.double()), "float64")
    _raises(lambda: E.npu_swiglu(q.to(torch.complex64)), "complex")
    _raises(lambda: E.npu_rotary_mul(q.double(), q.double(), q.double()), "float64")


def test_rejects_other_documented_misuse():
    qb, kb, vb = _bnsd(dtype=torch.bfloat16, D=24)
    _raises(lambda: FIA(qb, kb, vb, num_heads=2, input_layout="BNSD"), "16-aligned")
    qb, kb, vb = _bnsd(dtype=torch.bfloat16)
    _raises(lambda: FIA(qb.transpose(2, 3).contiguous().transpose(2, 3), kb, vb, num_heads=2,
                        input_layout="BNSD"), "contiguous")
    q1, k1, v1 = _bnsd(Sq=1, dtype=torch.bfloat16)
    _raises(lambda: FIA(q1, k1, v1, num_heads=2, input_layout="BNSD", inner_precise=2), "Q_S == 1")
    x = torch.randn(1, 3, 2, 8)
    _raises(lambda: E.npu_rotary_mul(x, torch.ones(1, 3, 1, 4), torch.ones(1, 3, 1, 4)), "full-width")
    _raises(lambda: E.npu_rotary_mul(x, torch.ones(1, 3, 1, 8), torch.ones(1, 3, 1, 8), "adjacent"),
            "rotary_mode")
    _raises(lambda: E.npu_rotary_mul(x, torch.ones(1, 3, 2, 8), torch.ones(1, 3, 2, 8), "interleave"),
            "interleave")
    _raises(lambda: E.npu_swiglu(torch.randn(2, 5)), "even")
    _raises(lambda: E.npu_gelu(x, approximate="sigmoid"), "approximate")
    _raises(lambda: E.npu_rms_norm(x, torch.ones(8, dtype=torch.bfloat16)), "gamma dtype")


def test_fia_has_no_backward():
    q, k, v = (t.requires_grad_(True) for t in _bnsd(dtype=torch.bfloat16))
    out = FIA(q, k, v, num_heads=2, input_layout="BNSD", scale=1 / math.sqrt(16))[0]
    with pytest.raises(NpuEmulatorError, match="no backward"):
        out.float().sum().backward()


def test_fa_mask_dtypes_and_fia_int8_mask():
    # FA documents bool / uint8 only; FIA documents bool / int8 / uint8.
    q, k, v = _bnsd()
    m = torch.zeros(5, 6, dtype=torch.uint8)
    torch.testing.assert_close(FA(q, k, v, 2, "BNSD", atten_mask=m, scale=0.3)[0],
                               FA(q, k, v, 2, "BNSD", scale=0.3)[0])
    qb, kb, vb = _bnsd(dtype=torch.bfloat16)
    out = FIA(qb, kb, vb, num_heads=2, input_layout="BNSD", scale=0.3,
              atten_mask=torch.zeros(5, 6, dtype=torch.int8))[0]
    torch.testing.assert_close(out, FIA(qb, kb, vb, num_heads=2, input_layout="BNSD", scale=0.3)[0])


def test_fa_causal_mode_without_its_mask_silently_attends_everywhere():
    # Documented: atten_mask None -> sparse_mode / pre_tockens / next_tockens have no effect (full
    # attention). The real op does not raise, so a translation that drops the compressed mask
    # gives a plausible wrong number; the emulator reproduces that instead of raising.
    q, k, v = _bnsd()
    full = FA(q, k, v, 2, "BNSD", scale=0.3)[0]
    torch.testing.assert_close(FA(q, k, v, 2, "BNSD", scale=0.3, sparse_mode=2)[0], full)
    comp = torch.ones(2048, 2048, dtype=torch.bool).triu(1)
    causal = FA(q, k, v, 2, "BNSD", scale=0.3, sparse_mode=2, atten_mask=comp)[0]
    assert (causal - full).abs().max() > 1e-2


def test_documented_shape_limits():
    # FA: D 1..768, Nq 1..256. FIA (Q_S > 1): D <= 512, N <= 256, N*D < 65535 in BSND.
    x = torch.randn(1, 1, 2, 784)
    _raises(lambda: FA(x, x, x, 1, "BNSD", scale=0.1), "768")
    xb = torch.randn(1, 2, 1, 528, dtype=torch.bfloat16)
    _raises(lambda: FIA(xb, xb, xb, num_heads=1, input_layout="BSND", scale=0.1), "512")
    xb = torch.randn(1, 2, 256, 256, dtype=torch.bfloat16)
    _raises(lambda: FIA(xb, xb, xb, num_heads=256, input_layout="BSND", scale=0.1), "65535")


def test_swiglu_rejects_non_contiguous_input():
    x = torch.randn(6, 4).t()
    _raises(lambda: E.npu_swiglu(x), "contiguous")
