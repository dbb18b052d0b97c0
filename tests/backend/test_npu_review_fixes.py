"""Fixes from the independent review of the NPU backend (issue 17): FIA takes key and value of one
shape only, the A2 SoC pattern, npu_rotary_mul's interleave mode under jit_compile.

Emulated: these prove the translation, not NPU numerics."""
from __future__ import annotations

import warnings

import pytest
import torch

from phyx.ops import reference
from phyx_npu import translate
from phyx_npu.capabilities import capabilities_for
from phyx_npu.emulated import NpuEmulatedBackend
from phyx_npu.emulator import EmulatedTorchNpu, NpuEmulatorError


def _spy(tnpu, monkeypatch):
    calls = []
    for name in ("npu_fusion_attention", "npu_fused_infer_attention_score", "npu_rotary_mul"):
        real = getattr(tnpu, name)

        def wrapped(*a, _real=real, _name=name, **kw):
            calls.append(_name)
            return _real(*a, **kw)
        monkeypatch.setattr(tnpu, name, wrapped)
    return calls


def _qkv_dv(dv=32, d=64, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 7, 4, d, generator=g).to(dtype)
    k = torch.randn(2, 11, 2, d, generator=g).to(dtype)
    v = torch.randn(2, 11, 2, dv, generator=g).to(dtype)
    return q, k, v


# ------------------------------------------------------------------ 1. FIA needs k.shape == v.shape
def test_emulator_fia_refuses_value_shape_unlike_key():
    q, k, v = _qkv_dv()
    with pytest.raises(NpuEmulatorError, match="identical"):
        EmulatedTorchNpu().npu_fused_infer_attention_score(
            q, k, v, num_heads=4, num_key_value_heads=2, input_layout="BSND", scale=0.125)


@pytest.mark.parametrize("causal", [False, True])
def test_value_head_size_unlike_key_routes_to_fa(monkeypatch, causal):
    backend = NpuEmulatedBackend()
    calls = _spy(backend.tnpu, monkeypatch)
    q, k, v = _qkv_dv()
    with torch.no_grad():
        out = backend.npu_kernels.attention(q, k, v, None, None, None, causal, None, False)
    ref = reference.attention(q, k, v, is_causal=causal)
    assert out.shape == (2, 7, 4, 32)
    torch.testing.assert_close(out.float(), ref.float(), atol=3e-2, rtol=3e-2)
    assert calls == ["npu_fusion_attention"]
    # control: with Dv == D the same bf16 inference call takes FIA
    calls.clear()
    q, k, v = _qkv_dv(dv=64)
    with torch.no_grad():
        backend.npu_kernels.attention(q, k, v, None, None, None, causal, None, False)
    assert calls == ["npu_fused_infer_attention_score"]


def test_planted_fia_route_for_unequal_kv_is_caught(monkeypatch):
    # Plant the old route (FIA whatever v's shape): the emulator raises as the real op would.
    backend = NpuEmulatedBackend()
    q, k, v = _qkv_dv()
    monkeypatch.setattr(translate, "fia_takes_kv", lambda k, v: True)
    with torch.no_grad(), pytest.raises(NpuEmulatorError, match="identical"):
        backend.npu_kernels.attention(q, k, v, None, None, None, False, None, False)


# ------------------------------------------------------------------ 2. A2 starts at Ascend910B1
# SoC names as torch_npu 2.14 knows them (the SocVersion enum in the wheel's
# include/torch_npu/csrc/core/npu/NpuVariables.h and the strings in libtorch_npu.so).
# Numbers 100..104 are the first-generation 910 family, 220+ A2, 250+ A3.
TORCH_NPU_SOCS = {
    "Ascend910PremiumA": "910", "Ascend910ProA": "910", "Ascend910A": "910",
    "Ascend910ProB": "910", "Ascend910B": "910",
    "Ascend310P1": "310P", "Ascend310P2": "310P", "Ascend310P3": "310P", "Ascend310P4": "310P",
    "Ascend310P5": "310P", "Ascend310P7": "310P",
    "Ascend910B1": "A2", "Ascend910B2": "A2", "Ascend910B2C": "A2", "Ascend910B3": "A2",
    "Ascend910B4": "A2", "Ascend910B4-1": "A2",
    "Ascend310B1": "unknown", "Ascend310B2": "unknown", "Ascend310B3": "unknown",
    "Ascend310B4": "unknown",
    "Ascend910_9391": "A3", "Ascend910_9392": "A3", "Ascend910_9381": "A3", "Ascend910_9382": "A3",
    "Ascend910_9372": "A3", "Ascend910_9362": "A3", "Ascend910_9363": "A3",
    "Ascend950": "unknown",
}


@pytest.mark.parametrize("soc,family", sorted(TORCH_NPU_SOCS.items()))
def test_soc_family_for_every_torch_npu_name(soc, family):
    caps = capabilities_for(soc)
    assert caps.family == family
    assert caps.has("npu_fusion_attention") == (family in ("A2", "A3"))


# ------------------------------------------------------------------ 3. rotary interleave + jit
def _rope_inputs(D=16, dtype=torch.float32):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 7, 3, D, generator=g).to(dtype)
    ang = torch.rand(7, D // 2, generator=g, dtype=torch.float64) * 6
    return x, ang.cos().float(), ang.sin().float()


def test_emulator_rotary_interleave_raises_under_jit_compile():
    x, cos, sin = _rope_inputs()
    r = torch.ones(1, 7, 1, 16)
    emu = EmulatedTorchNpu(jit_compile=True)
    assert emu.npu.is_jit_compile_false() is False
    with pytest.raises(NpuEmulatorError, match="jit_compile"):
        emu.npu_rotary_mul(x, r, r, rotary_mode="interleave")
    emu.npu.set_compile_mode(jit_compile=False)
    assert emu.npu_rotary_mul(x, r, r, rotary_mode="interleave").shape == x.shape


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("style", ["adjacent", "half"])
def test_rope_follows_the_compile_mode(monkeypatch, jit_compile, style):
    monkeypatch.setattr(translate, "_warned", set())
    backend = NpuEmulatedBackend(jit_compile=jit_compile)
    calls = _spy(backend.tnpu, monkeypatch)
    x, cos, sin = _rope_inputs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = backend.npu_kernels.rope(x, cos, sin, style)
        out2 = backend.npu_kernels.rope(x, cos, sin, style)
    ref = reference.rope(x, cos, sin, style)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(out2, ref, atol=2e-5, rtol=2e-5)
    fused = not jit_compile     # D=16: under jit_compile even 'half' is outside the op (D=128 only)
    assert calls == (["npu_rotary_mul"] * 2 if fused else [])
    msgs = [str(w.message) for w in caught if "jit_compile" in str(w.message)]
    assert len(msgs) == (0 if fused else 1)     # warned once, not per call


def test_rope_half_d128_stays_fused_under_jit_compile(monkeypatch):
    backend = NpuEmulatedBackend(jit_compile=True)
    calls = _spy(backend.tnpu, monkeypatch)
    x, cos, sin = _rope_inputs(D=128)
    out = backend.npu_kernels.rope(x, cos, sin, "half")
    torch.testing.assert_close(out, reference.rope(x, cos, sin, "half"), atol=2e-5, rtol=2e-5)
    assert calls == ["npu_rotary_mul"]


def test_planted_rope_ignoring_jit_compile_is_caught(monkeypatch):
    backend = NpuEmulatedBackend(jit_compile=True)
    monkeypatch.setattr(translate, "fused_rope_ok", lambda tnpu, mode, d: (True, ""))
    x, cos, sin = _rope_inputs()
    with pytest.raises(NpuEmulatorError, match="jit_compile"):
        backend.npu_kernels.rope(x, cos, sin, "adjacent")


def test_rope_without_the_compile_query_falls_back(monkeypatch):
    monkeypatch.setattr(translate, "_warned", set())
    backend = NpuEmulatedBackend()
    monkeypatch.delattr(type(backend.tnpu.npu), "is_jit_compile_false")
    calls = _spy(backend.tnpu, monkeypatch)
    x, cos, sin = _rope_inputs()
    with pytest.warns(RuntimeWarning, match="is_jit_compile_false is missing"):
        out = backend.npu_kernels.rope(x, cos, sin, "adjacent")
    torch.testing.assert_close(out, reference.rope(x, cos, sin, "adjacent"), atol=2e-5, rtol=2e-5)
    assert calls == []
