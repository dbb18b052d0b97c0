"""The NPU backend's kernels, run through the torch_npu emulator, against phyx.ops.reference.

Emulated: these prove the translation (argument names, layouts, masks, scale, lengths, routes),
not NPU numerics."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from phyx.errors import BackendUnavailableError, UnsupportedArgumentError
from phyx.ops import reference
from phyx_npu import NpuBackend
from phyx_npu.capabilities import capabilities_for
from phyx_npu.emulated import NpuEmulatedBackend

TOL = {torch.float32: 2e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}


@pytest.fixture(scope="module")
def backend():
    return NpuEmulatedBackend()


class Spy:
    """Counts calls into the torch_npu-like object and keeps their kwargs."""

    def __init__(self, tnpu, monkeypatch):
        self.calls = []
        for name in ("npu_fusion_attention", "npu_fused_infer_attention_score"):
            real = getattr(tnpu, name)

            def wrapped(*a, _real=real, _name=name, **kw):
                self.calls.append((_name, kw))
                return _real(*a, **kw)
            monkeypatch.setattr(tnpu, name, wrapped)

    def ops(self):
        return {n for n, _ in self.calls}


def _qkv(B, Sq, Skv, Nq, Nkv, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Sq, Nq, D, generator=g).to(dtype)
    k = torch.randn(B, Skv, Nkv, D, generator=g).to(dtype)
    v = torch.randn(B, Skv, Nkv, D, generator=g).to(dtype)
    return q, k, v


def _keep_mask(B, N, Sq, Skv, seed=1, dead_row=True):
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(B, N, Sq, Skv, generator=g) < 0.7
    if dead_row:
        keep[0, :, 1, :] = False   # a fully masked row
    return keep


def _additive(B, N, Sq, Skv, seed=2):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(B, N, Sq, Skv, generator=g) * 2.0
    m[torch.rand(B, N, Sq, Skv, generator=g) < 0.2] = float("-inf")
    return m


# (name, kwargs builder) over shapes B=2, Sq=7, Skv=13 (odd, not powers of two), Nq=4, Nkv=2 (GQA)
def _cases(B=2, Sq=7, Skv=13, Nq=4):
    return {
        "plain": lambda: {},
        "scale": lambda: {"scale": 0.37},
        "bool_mask_b1ss": lambda: {"attn_mask": _keep_mask(B, 1, Sq, Skv)},
        "bool_mask_ss": lambda: {"attn_mask": _keep_mask(1, 1, Sq, Skv)[0, 0]},
        "bool_mask_per_head": lambda: {"attn_mask": _keep_mask(B, Nq, Sq, Skv)},
        "key_padding_mask": lambda: {"attn_mask": _keep_mask(B, 1, 1, Skv, dead_row=False)},
        "additive_mask": lambda: {"attn_mask": _additive(B, 1, Sq, Skv)},
        "additive_mask_per_head": lambda: {"attn_mask": _additive(1, Nq, Sq, Skv)},
        "kv_lens": lambda: {"kv_lens": torch.tensor([5, 13])},
        "kv_lens_zero": lambda: {"kv_lens": torch.tensor([0, 9])},
        "q_lens": lambda: {"q_lens": torch.tensor([3, 7]), "kv_lens": torch.tensor([11, 6])},
        "causal": lambda: {"is_causal": True},
        "causal_kv_lens": lambda: {"is_causal": True, "kv_lens": torch.tensor([4, 12])},
        "causal_bool_mask": lambda: {"is_causal": True, "attn_mask": _keep_mask(B, 1, Sq, Skv)},
        "causal_additive": lambda: {"is_causal": True, "attn_mask": _additive(B, 1, Sq, Skv)},
        "mask_and_kv_lens": lambda: {"attn_mask": _keep_mask(B, 1, Sq, Skv),
                                     "kv_lens": torch.tensor([13, 8])},
        "additive_and_lens": lambda: {"attn_mask": _additive(B, 1, Sq, Skv),
                                      "kv_lens": torch.tensor([6, 13]), "q_lens": torch.tensor([7, 2])},
    }


CASES = _cases()


def _check(backend, dtype, D, case, lse):
    q, k, v = _qkv(2, 7, 13, 4, 2, D, dtype)
    kw = CASES[case]()
    out, l = backend.npu_kernels.attention(q, k, v, kw.get("attn_mask"), kw.get("kv_lens"),
                                           kw.get("q_lens"), kw.get("is_causal", False),
                                           kw.get("scale"), True)
    ref, rl = reference.attention(q, k, v, kw.get("attn_mask"), kw.get("kv_lens"), kw.get("q_lens"),
                                  kw.get("is_causal", False), kw.get("scale"), True)
    assert out.dtype == dtype and out.shape == ref.shape
    torch.testing.assert_close(out.float(), ref.float(), atol=TOL[dtype], rtol=TOL[dtype])
    if lse:
        assert l.shape == rl.shape and l.dtype == torch.float32
        assert torch.equal(torch.isneginf(l), torch.isneginf(rl))
        fin = torch.isfinite(rl)
        ltol = max(1e-4, TOL[dtype])   # low precision: the additive mask travels as pse in q.dtype
        torch.testing.assert_close(l[fin], rl[fin], atol=ltol, rtol=ltol)


@pytest.mark.parametrize("case", sorted(CASES))
def test_attention_fa_fp32_matches_reference(backend, case, monkeypatch):
    spy = Spy(backend.tnpu, monkeypatch)
    with torch.no_grad():
        _check(backend, torch.float32, 16, case, lse=True)
    assert spy.ops() == {"npu_fusion_attention"}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", ["plain", "bool_mask_b1ss", "bool_mask_ss", "kv_lens", "kv_lens_zero",
                                  "q_lens", "causal", "causal_kv_lens", "causal_bool_mask",
                                  "mask_and_kv_lens", "key_padding_mask"])
def test_attention_fia_inference_matches_reference(backend, case, dtype, monkeypatch):
    spy = Spy(backend.tnpu, monkeypatch)
    with torch.no_grad():
        _check(backend, dtype, 16, case, lse=True)
    assert spy.ops() == {"npu_fused_infer_attention_score"}


@pytest.mark.parametrize("case", ["additive_mask", "bool_mask_per_head"])
def test_attention_low_precision_routes_to_fa_when_fia_cannot(backend, case, monkeypatch):
    # FIA has no per-head mask and an undocumented pse_shift order: FA takes these.
    spy = Spy(backend.tnpu, monkeypatch)
    with torch.no_grad():
        _check(backend, torch.bfloat16, 16, case, lse=True)
    assert spy.ops() == {"npu_fusion_attention"}


def test_attention_head_dim_not_16_aligned_uses_fa(backend, monkeypatch):
    spy = Spy(backend.tnpu, monkeypatch)
    with torch.no_grad():
        _check(backend, torch.float16, 12, "causal", lse=False)
    assert spy.ops() == {"npu_fusion_attention"}


def test_attention_single_query_uses_fa_with_causal(backend, monkeypatch):
    # FIA ignores sparse_mode when Q_S == 1: a causal single query must not go there.
    spy = Spy(backend.tnpu, monkeypatch)
    q, k, v = _qkv(2, 1, 9, 4, 4, 16, torch.bfloat16)
    with torch.no_grad():
        out = backend.npu_kernels.attention(q, k, v, None, None, None, True, None, False)
    ref = reference.attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out.float(), ref.float(), atol=3e-2, rtol=3e-2)
    assert spy.ops() == {"npu_fusion_attention"}


@pytest.mark.parametrize("case", ["plain", "causal_kv_lens", "bool_mask_b1ss", "additive_and_lens"])
def test_attention_training_uses_fa_and_gradients_match(backend, case, monkeypatch):
    spy = Spy(backend.tnpu, monkeypatch)
    q, k, v = _qkv(2, 7, 13, 4, 2, 16, torch.float32)
    kw = CASES[case]()
    grads = []
    for fn in (backend.npu_kernels.attention, reference.attention):
        qq, kk, vv = (t.clone().requires_grad_(True) for t in (q, k, v))
        out = fn(qq, kk, vv, kw.get("attn_mask"), kw.get("kv_lens"), kw.get("q_lens"),
                 kw.get("is_causal", False), None, False)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append([qq.grad, kk.grad, vv.grad])
    for a, b in zip(*grads):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert spy.ops() == {"npu_fusion_attention"}


def test_attention_always_passes_scale_and_never_a_band_limit(backend, monkeypatch):
    spy = Spy(backend.tnpu, monkeypatch)
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16):
            for case in CASES:
                _check(backend, dtype, 16, case, lse=False)
    assert spy.calls
    for name, kw in spy.calls:
        assert "scale" in kw and kw["scale"] != 1.0, (name, kw)
        for banned in ("pre_tockens", "next_tockens", "pre_tokens", "next_tokens"):
            assert banned not in kw, f"{name} was given a band limit {banned}={kw[banned]}"
        assert kw.get("sparse_mode", 0) in (0, 2)   # never bottom-right causal


def test_attention_sets_row_correction_when_rows_may_be_fully_masked(backend, monkeypatch):
    spy = Spy(backend.tnpu, monkeypatch)
    with torch.no_grad():
        _check(backend, torch.float32, 16, "bool_mask_b1ss", lse=False)
        _check(backend, torch.bfloat16, 16, "bool_mask_b1ss", lse=False)
    assert [kw["inner_precise"] for _, kw in spy.calls] == [2, 2]


def test_attention_at_wan_like_ratio_and_bigger_lengths(backend):
    # Non-power-of-two length, GQA 5:1, kv_lens padding as Ulysses produces it.
    q, k, v = _qkv(1, 45, 45, 10, 2, 32, torch.float32, seed=3)
    kvl = torch.tensor([41])
    out = backend.npu_kernels.attention(q, k, v, None, kvl, None, False, None, False)
    torch.testing.assert_close(out, reference.attention(q, k, v, kv_lens=kvl), atol=2e-5, rtol=2e-5)


# ------------------------------------------------------------------------------- other ops
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rms_norm(backend, dtype):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, 3, 24, generator=g).to(dtype)
    w = (torch.rand(24, generator=g) + 0.5).to(dtype)
    for weight in (w, None):
        out = backend.npu_kernels.rms_norm(x, weight, 1e-6)
        ref = reference.rms_norm(x, weight, 1e-6)
        assert out.dtype == ref.dtype
        # fused kernel: gamma in fp32, one rounding -> within one low-precision ulp of the reference
        torch.testing.assert_close(out.float(), ref.float(), atol=TOL[dtype] * 2, rtol=TOL[dtype])
    # fp32 weight with bf16 input: the reference promotes to fp32; the kernel must do the same
    out = backend.npu_kernels.rms_norm(x, w.float(), 1e-6)
    assert out.dtype == reference.rms_norm(x, w.float(), 1e-6).dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("style", ["adjacent", "half"])
@pytest.mark.parametrize("per_batch", [False, True])
def test_rope(backend, dtype, style, per_batch):
    g = torch.Generator().manual_seed(5)
    B, S, N, D = 2, 7, 3, 16
    x = torch.randn(B, S, N, D, generator=g).to(dtype)
    ang = torch.rand((B, S, D // 2) if per_batch else (S, D // 2), generator=g, dtype=torch.float64) * 6
    cos, sin = ang.cos().float(), ang.sin().float()
    out = backend.npu_kernels.rope(x, cos, sin, style)
    ref = reference.rope(x, cos, sin, style)
    torch.testing.assert_close(out.float(), ref.float(), atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swiglu_gelu(backend, dtype):
    g = torch.Generator().manual_seed(6)
    x = (torch.randn(3, 5, 18, generator=g) * 3).to(dtype)
    torch.testing.assert_close(backend.npu_kernels.swiglu(x).float(), reference.swiglu(x).float(),
                               atol=TOL[dtype] * 3, rtol=TOL[dtype])
    for approx in ("none", "tanh"):
        torch.testing.assert_close(backend.npu_kernels.gelu(x, approx).float(),
                                   reference.gelu(x, approx).float(), atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("bad", [torch.float64, torch.complex64])
def test_kernels_refuse_float64_and_complex(backend, bad):
    k = backend.npu_kernels
    x = torch.randn(2, 4, 2, 8).to(bad)
    cos = torch.ones(4, 4, dtype=bad)
    calls = [lambda: k.attention(x, x, x, None, None, None, False, None, False),
             lambda: k.rms_norm(x, None, 1e-6), lambda: k.rope(x, cos, cos, "half"),
             lambda: k.swiglu(x), lambda: k.gelu(x, "none")]
    for call in calls:
        with pytest.raises(UnsupportedArgumentError, match="host|NPU"):
            call()


# ------------------------------------------------------------------------- backend plumbing
def test_emulated_backend_identity(backend):
    assert backend.name == "npu-emulated" and backend.emulated
    assert backend.device_type == "cpu" and backend.dist_backend == "gloo"
    assert NpuBackend.device_type == "npu" and NpuBackend.dist_backend == "hccl"
    assert NpuBackend.visible_devices_env == "ASCEND_RT_VISIBLE_DEVICES"
    assert NpuEmulatedBackend.probe()[0] is True
    info = backend.soc_info()
    assert info["soc"] == "Ascend910B3" and info["family"] == "A2"
    assert {"cann", "driver", "torch_npu"} <= set(info)


def test_precision_switches_toggle_hf32(backend):
    assert backend.set_reduced_precision_matmul(False) == {"npu.matmul.allow_hf32": False,
                                                           "npu.conv.allow_hf32": False}
    assert backend.tnpu.npu.conv.allow_hf32 is False
    assert backend.set_reduced_precision_matmul(True)["npu.conv.allow_hf32"] is True
    backend.set_reduced_precision_matmul(False)


def test_hccl_env_defaults_are_bounded():
    from phyx.comm import DEFAULT_TIMEOUT_S
    from phyx_npu.backend import HCCL_ENV_DEFAULTS

    env = HCCL_ENV_DEFAULTS
    exec_s, connect_s = int(env["HCCL_EXEC_TIMEOUT"]), int(env["HCCL_CONNECT_TIMEOUT"])
    assert exec_s >= 68 and exec_s % 68 == 0      # exact on the 68-s-granular first-gen chips too
    assert 120 <= connect_s <= 7200                # documented range
    # Ascend: the process-group timeout must exceed both, or the watchdog fires first without
    # HCCL's reason (the connect wait is the variable + 20 s).
    assert exec_s < DEFAULT_TIMEOUT_S and connect_s + 20 < DEFAULT_TIMEOUT_S
    # torch_npu 2.14 reads TORCH_HCCL_ASYNC_ERROR_HANDLING; the unprefixed name is deprecated.
    assert env["TORCH_HCCL_ASYNC_ERROR_HANDLING"] == "1" and "HCCL_ASYNC_ERROR_HANDLING" not in env


def test_capabilities_by_soc():
    assert capabilities_for("Ascend910B4").family == "A2"
    assert capabilities_for("Ascend910_9391").family == "A3"
    cap = capabilities_for("Ascend310P3")
    assert cap.family == "310P" and not cap.has("npu_fusion_attention")
    assert capabilities_for("SomethingNew").family == "unknown"
    # On a chip without FA/FIA the attention kernel is not registered: 'fast' falls back to reference.
    ops = {k.op for k in NpuEmulatedBackend(soc="Ascend310P3").kernels()}
    assert ops == {"gelu"}
    ops = {k.op for k in NpuEmulatedBackend().kernels()}
    assert ops == {"attention", "rms_norm", "rope", "swiglu", "gelu"}


@pytest.mark.skipif(NpuBackend.probe()[0], reason="a real NPU is present")
def test_set_backend_npu_explains_what_is_missing():
    import phyx

    with pytest.raises(BackendUnavailableError) as e:
        phyx.set_backend("npu")
    msg = str(e.value)
    for needle in ("torch_npu", "CANN", "libascendcl", "npu-emulated"):
        assert needle in msg


def test_phyx_info_npu_emulated():
    r = subprocess.run([sys.executable, "-m", "phyx.cli", "info", "--backend", "npu-emulated"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "npu-emulated" in r.stdout and "EMULATED" in r.stdout
    assert "soc" in r.stdout and "Ascend910B3" in r.stdout
    assert "torch_npu.npu_fusion_attention" in r.stdout


def test_public_ops_route_through_the_npu_kernels_and_policy_switches():
    import phyx
    from phyx.tools.parity.backends import using_backend

    q, k, v = _qkv(1, 5, 5, 2, 2, 16, torch.float32)
    x = torch.linspace(-4, 4, 33)
    with using_backend("npu-emulated", "fast") as b:
        assert phyx.ops.chosen_kernel("gelu").name == "torch_npu.npu_gelu"
        # 'fast' picks kernels only; HF32 stays at torch_npu's defaults (matmul off, conv on)
        assert b.precision_flags() == {"npu.matmul.allow_hf32": False, "npu.conv.allow_hf32": True}
        torch.testing.assert_close(phyx.ops.attention(q, k, v, is_causal=True),
                                   reference.attention(q, k, v, is_causal=True), atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(phyx.ops.gelu(x), reference.gelu(x))
        phyx.set_policy("reference")   # parity default: reference kernels, HF32 off
        assert phyx.ops.chosen_kernel("attention").name == "reference"
        assert b.precision_flags() == {"npu.matmul.allow_hf32": False, "npu.conv.allow_hf32": False}


def test_attention_routes_around_documented_shape_limits(backend):
    k = backend.npu_kernels
    g = torch.Generator().manual_seed(3)
    # D = 528: 16-aligned bf16 inference, but above FIA's D <= 512 -> must go to FA, not fail.
    q, kk, v = (torch.randn(1, 3, 1, 528, generator=g).bfloat16() for _ in range(3))
    with torch.no_grad():
        torch.testing.assert_close(k.attention(q, kk, v, None, None, None, False, None, False).float(),
                                   reference.attention(q, kk, v).float(), atol=3e-2, rtol=3e-2)
    # D = 784: beyond FA's 768 too -> a clear error, not a device failure.
    q = torch.randn(1, 2, 1, 784)
    with pytest.raises(UnsupportedArgumentError, match="768"):
        k.attention(q, q, q, None, None, None, False, None, False)


def test_swiglu_makes_its_input_contiguous(backend):
    x = torch.randn(8, 3).t()   # [3, 8], non-contiguous
    torch.testing.assert_close(backend.npu_kernels.swiglu(x), reference.swiglu(x))
