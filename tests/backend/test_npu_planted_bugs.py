"""Plant wrong translations into phyx_npu.translate and show the emulator-backed tests catch each:
the result then differs from phyx.ops.reference, or the emulator raises as the real op would.

Each test first checks the unplanted translation matches on the same inputs, so a 'caught' is
the plant's doing and not a broken case."""
from __future__ import annotations

import pytest
import torch

from phyx.ops import reference
from phyx_npu import translate
from phyx_npu.emulated import NpuEmulatedBackend
from phyx_npu.emulator import NpuEmulatorError


@pytest.fixture(scope="module")
def kernels():
    return NpuEmulatedBackend().npu_kernels


def _inputs(dtype, Sq=6, Skv=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, Sq, 4, 16, generator=g).to(dtype)
    k = torch.randn(2, Skv, 2, 16, generator=g).to(dtype)
    v = torch.randn(2, Skv, 2, 16, generator=g).to(dtype)
    keep = torch.rand(2, 1, Sq, Skv, generator=g) < 0.6
    keep[..., 0] = True
    additive = torch.randn(2, 1, Sq, Skv, generator=g) * 3
    return q, k, v, keep, additive


def _attn(kernels, dtype, **kw):
    q, k, v, keep, additive = _inputs(dtype)
    mask = {"bool": keep, "additive": additive, None: None}[kw.pop("mask", None)]
    args = (q, k, v, mask, kw.get("kv_lens"), None, kw.get("is_causal", False), kw.get("scale"), False)
    with torch.no_grad():
        return kernels.attention(*args), reference.attention(*args)


def _assert_caught(run, tol):
    """The planted run must raise like the real op or give a clearly wrong number."""
    try:
        out, ref = run()
    except NpuEmulatorError:
        return
    assert (out.float() - ref.float()).abs().max().item() > 10 * tol, "planted bug not caught"


def _plant(monkeypatch, name, value, run, tol):
    out, ref = run()
    torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)  # control: unplanted ok
    monkeypatch.setattr(translate, name, value)
    _assert_caught(run, tol)


ROUTES = [(torch.float32, 2e-5), (torch.bfloat16, 3e-2)]   # FA (fp32) and FIA (bf16 inference)


@pytest.mark.parametrize("dtype,tol", ROUTES)
def test_mask_not_inverted_is_caught(kernels, monkeypatch, dtype, tol):
    _plant(monkeypatch, "to_npu_mask", lambda keep: keep,
           lambda: _attn(kernels, dtype, mask="bool"), tol)


@pytest.mark.parametrize("dtype,tol", ROUTES)
def test_scale_left_at_npu_default_is_caught(kernels, monkeypatch, dtype, tol):
    _plant(monkeypatch, "scale_value", lambda scale, d: 1.0, lambda: _attn(kernels, dtype), tol)


@pytest.mark.parametrize("dtype,tol", ROUTES)
@pytest.mark.parametrize("layout", ["BNSD", "BSH", "SBH", "BSDN"])
def test_wrong_layout_string_is_caught(kernels, monkeypatch, dtype, tol, layout):
    _plant(monkeypatch, "QKV_LAYOUT", layout, lambda: _attn(kernels, dtype), tol)


def test_wrong_layout_that_fits_the_shapes_still_gives_wrong_numbers(kernels, monkeypatch):
    # S == N: BNSD passes the emulator's shape checks, so only the numbers can catch it.
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 4, 4, 16, generator=g) for _ in range(3))

    def run():
        args = (q, k, v, None, None, None, False, None, False)
        return kernels.attention(*args), reference.attention(*args)
    _plant(monkeypatch, "QKV_LAYOUT", "BNSD", run, 2e-5)


def test_additive_mask_not_divided_by_scale_is_caught(kernels, monkeypatch):
    _plant(monkeypatch, "pse_from_additive", lambda m, scale: m,
           lambda: _attn(kernels, torch.float32, mask="additive"), 2e-5)


def test_bottom_right_causal_is_caught(kernels, monkeypatch):
    # sparse_mode 3 (flash-attn's bottom-right causal) instead of 2 (SDPA's top-left); Sq != Skv
    for dtype, tol in ROUTES:
        _plant(monkeypatch, "SPARSE_CAUSAL_TOP_LEFT", 3,
               lambda: _attn(kernels, dtype, is_causal=True), tol)
        monkeypatch.undo()


def test_per_batch_lengths_in_tnd_are_caught(kernels, monkeypatch):
    # FA's TND wants cumulative lengths: a translation passing per-batch ones must fail.
    real = kernels._fa_tnd.__func__

    def per_batch_lengths(self, q, k, v, is_causal, kvlens, qlens, sc, return_lse):
        fa = self.tnpu.npu_fusion_attention

        def wrong(*a, actual_seq_qlen=None, actual_seq_kvlen=None, **kw):
            undo = lambda c: [c[0]] + [b - a for a, b in zip(c, c[1:])]  # noqa: E731
            return fa(*a, actual_seq_qlen=undo(actual_seq_qlen),
                      actual_seq_kvlen=undo(actual_seq_kvlen), **kw)
        self.tnpu.npu_fusion_attention = wrong
        try:
            return real(self, q, k, v, is_causal, kvlens, qlens, sc, return_lse)
        finally:
            del self.tnpu.npu_fusion_attention
    run = lambda: _attn(kernels, torch.float32, kv_lens=torch.tensor([7, 10]))  # noqa: E731
    out, ref = run()
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
    monkeypatch.setattr(type(kernels), "_fa_tnd", per_batch_lengths)
    _assert_caught(run, 2e-5)


def test_fia_used_for_training_is_caught(kernels, monkeypatch):
    monkeypatch.setattr(translate, "_needs_grad", lambda *ts: False)
    q, k, v, _, _ = _inputs(torch.bfloat16)
    q.requires_grad_(True)
    out = kernels.attention(q, k, v, None, None, None, False, None, False)
    with pytest.raises(NpuEmulatorError, match="no backward"):
        out.float().sum().backward()


def _gelu_run(kernels):
    x = torch.linspace(-5, 5, 257)
    return lambda: (kernels.gelu(x, "none"), reference.gelu(x, "none"))


def test_exact_gelu_through_native_gelu_is_caught(kernels, monkeypatch):
    # what `F.gelu(x, approximate='none')` does on the NPU: tanh regardless
    _plant(monkeypatch, "gelu_call", lambda t, x, a: t.native_gelu(x, approximate=a),
           _gelu_run(kernels), 1e-6)


def test_gelu_left_approximate_is_caught(kernels, monkeypatch):
    _plant(monkeypatch, "gelu_call", lambda t, x, a: t.npu_gelu(x, approximate="tanh"),
           _gelu_run(kernels), 1e-6)


def _rope_run(kernels, style):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 3, 16, generator=g)
    ang = torch.rand(5, 8, generator=g, dtype=torch.float64) * 6
    cos, sin = ang.cos().float(), ang.sin().float()
    return lambda: (kernels.rope(x, cos, sin, style), reference.rope(x, cos, sin, style))


@pytest.mark.parametrize("style", ["adjacent", "half"])
def test_rope_mode_swapped_is_caught(kernels, monkeypatch, style):
    _plant(monkeypatch, "ROPE_MODE", {"adjacent": "half", "half": "interleave"},
           _rope_run(kernels, style), 1e-5)


@pytest.mark.parametrize("style", ["adjacent", "half"])
def test_rope_table_expanded_the_wrong_way_is_caught(kernels, monkeypatch, style):
    wrong = (lambda t, mode: t.repeat_interleave(2, -1) if mode == "half" else torch.cat((t, t), -1))
    _plant(monkeypatch, "rope_table", wrong, _rope_run(kernels, style), 1e-5)


def test_causal_without_its_compressed_mask_is_caught(kernels, monkeypatch):
    # FA with sparse_mode 2 but no atten_mask silently computes full attention (documented);
    # FIA raises. Either way the plant must not pass.
    for dtype, tol in ROUTES:
        _plant(monkeypatch, "causal_compressed_mask", lambda device: None,
               lambda: _attn(kernels, dtype, is_causal=True), tol)
        monkeypatch.undo()
