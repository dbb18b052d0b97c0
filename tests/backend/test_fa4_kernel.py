"""FlashAttention-4 in the CUDA backend, on the CPU: registration order per GPU architecture,
what the strict kernel refuses, what the SDPA-backed kernel hands to SDPA, and the arguments
phyx passes. FA4 itself is replaced by a plain-torch stand-in with FA4's signature and return
value; the real kernel runs in tests/backend/test_cuda_backend.py on a GPU with flash-attn-4 installed.
"""
from __future__ import annotations

import pytest
import torch

from phyx.errors import UnsupportedArgumentError
from phyx.ops import reference
from phyx_cuda import attention as A


class FakeFA4:
    """flash_attn.cute.flash_attn_func's contract: B S N D in, (out, lse [B, N, Sq] fp32 or None)."""

    def __init__(self):
        self.calls = []

    def __call__(self, q, k, v, softmax_scale=None, causal=False, return_lse=False):
        self.calls.append({"shape": tuple(q.shape), "scale": softmax_scale, "causal": causal,
                           "return_lse": return_lse})
        out, lse = reference.attention(q, k, v, is_causal=causal, scale=softmax_scale, return_lse=True)
        return out, (lse if return_lse else None)


def _qkv(dtype=torch.bfloat16, B=2, Sq=40, Skv=40, N=4, Nkv=4, D=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, Sq, N, D, generator=g).to(dtype), torch.randn(B, Skv, Nkv, D, generator=g).to(dtype),
            torch.randn(B, Skv, Nkv, D, generator=g).to(dtype))


def _kernels(capability, fn=None):
    first, last = A.flash_attn4_kernels(fn or FakeFA4(), capability=capability)
    return {k.name: k for k in first + last}, [k.name for k in first], [k.name for k in last]


def test_fa4_leads_only_where_it_was_measured_faster():
    measured = next(iter(A.FA4_MEASURED_FASTER))
    _, first, last = _kernels(measured)
    assert first == ["flash_attn4_or_sdpa"] and last == ["flash_attn4"]
    _, first, last = _kernels((8, 0))  # Ampere: FA4 runs there, but nobody measured it
    assert first == [] and last == ["flash_attn4_or_sdpa", "flash_attn4"]


def test_not_installed_registers_nothing(monkeypatch):
    monkeypatch.setenv("PHYX_CUDA_FA4", "0")
    assert not A.fa4_installed()
    assert A.flash_attn4_kernels() == ([], [])


def test_fa4_gets_phyx_arguments_and_lse_comes_back_fp32():
    fake = FakeFA4()
    ks, _, _ = _kernels((9, 0), fake)
    # GQA goes to FA4 as is (it takes fewer KV heads natively); enough keys for the SDPA-backed
    # kernel to pick FA4 (below FA4_MIN_KEYS it uses SDPA)
    S = A.FA4_MIN_KEYS
    q, k, v = _qkv(B=1, Sq=S, Skv=S, N=2, Nkv=1, D=16)
    for name in ("flash_attn4", "flash_attn4_or_sdpa"):
        out, lse = ks[name].fn(q, k, v, None, None, None, True, 0.3, True)
        want, wlse = reference.attention(q, k, v, is_causal=True, scale=0.3, return_lse=True)
        assert torch.equal(out, want) and lse.dtype == torch.float32
        assert torch.allclose(lse, wlse.float())
    assert fake.calls == [{"shape": (1, S, 2, 16), "scale": 0.3, "causal": True, "return_lse": True}] * 2


def test_strict_kernel_refuses_what_fa4_cannot_run():
    ks, _, _ = _kernels((9, 0))
    strict = ks["flash_attn4"].fn
    q, k, v = _qkv()
    mask = torch.ones(40, 40, dtype=torch.bool)
    with pytest.raises(UnsupportedArgumentError, match="mask"):
        strict(q, k, v, mask, None, None, False, None, False)
    with pytest.raises(UnsupportedArgumentError, match="float32"):
        strict(*_qkv(torch.float32), None, None, None, False, None, False)
    qr, kr, vr = _qkv(Sq=24, Skv=40)
    with pytest.raises(UnsupportedArgumentError, match="top-left"):
        strict(qr, kr, vr, None, None, None, True, None, False)
    with pytest.raises(UnsupportedArgumentError, match="head dims"):
        strict(*_qkv(D=260), None, None, None, False, None, False)


def test_or_sdpa_hands_the_rest_to_sdpa():
    fake = FakeFA4()
    ks, _, _ = _kernels((9, 0), fake)
    auto = ks["flash_attn4_or_sdpa"].fn
    cases = [
        (_qkv(), torch.rand(40, 40) > 0.3, False),         # a mask
        (_qkv(torch.float32), None, False),                 # fp32
        (_qkv(Sq=24, Skv=40), None, True),                  # top-left causal, Sq != Skv
        (_qkv(D=260), None, False),                         # head dim FA4 has no kernel for
        (_qkv(), None, False),                              # fewer keys than FA4_MIN_KEYS
    ]
    for (q, k, v), mask, causal in cases:
        if mask is not None:
            mask[:, 0] = True  # no fully masked row
        got = auto(q, k, v, mask, None, None, causal, None, False)
        want = reference.attention(q.double(), k.double(), v.double(), mask, is_causal=causal)
        err = ((got.double() - want).norm() / want.norm()).item()
        assert err < (2e-2 if q.dtype == torch.bfloat16 else 1e-5), err
    assert fake.calls == [], "FA4 was called for inputs it cannot run"


def test_kv_lens_and_q_lens_go_through_the_shared_wrapper():
    fake = FakeFA4()
    ks, _, _ = _kernels((9, 0), fake)
    q, k, v = _qkv()
    kv_lens, q_lens = torch.tensor([40, 17]), torch.tensor([40, 30])
    got = ks["flash_attn4"].fn(q, k, v, None, kv_lens, q_lens, False, None, False)
    want = reference.attention(q, k, v, kv_lens=kv_lens, q_lens=q_lens)
    assert torch.allclose(got.float(), want.float(), atol=1e-2)
    assert [c["shape"] for c in fake.calls] == [(1, 40, 4, 64), (1, 40, 4, 64)]  # per batch element


def test_a_broken_fa4_install_is_a_clear_error_naming_the_fix(monkeypatch):
    import sys

    from phyx.errors import BackendUnavailableError

    monkeypatch.setitem(sys.modules, "flash_attn.cute", None)  # installed, but the import fails
    monkeypatch.setattr(A, "_FA4_FN", {})
    core = A.fa4_core()  # no function given: imports flash_attn.cute on first use
    q, k, v = _qkv(B=1, Sq=8, Skv=8, N=2, D=16)
    with pytest.raises(BackendUnavailableError, match="PHYX_CUDA_FA4=0"):
        core(q, k, v, None, False, None, False)
