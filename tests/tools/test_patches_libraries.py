"""The shims survive real libraries imported inside the scope: types stay types, the torch.cuda
calls upstream repos make are served (or refused naming phyx), flash-attn's private entry points
return what flash-attn returns, and autocast works on every backend including the emulator."""
from __future__ import annotations

import importlib
import math
import sys

import pytest
import torch

import phyx
import phyx_patches
from phyx.errors import UnsupportedArgumentError

BACKENDS = ["cpu", "npu-emulated"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    from phyx.tools.parity.backends import using_backend

    with using_backend(request.param, "fast") as b:
        yield b


def ref_attention(q, k, v, causal=False, scale=None):
    """float64 softmax attention on [B, S, N, D], flash-attn's bottom-right causal; + lse."""
    d = q.shape[-1]
    scale = 1 / math.sqrt(d) if scale is None else scale
    qd, kd, vd = (t.double().transpose(1, 2) for t in (q, k, v))
    s = qd @ kd.transpose(-1, -2) * scale
    if causal:
        sq, sk = q.shape[1], k.shape[1]
        i, j = torch.arange(sq)[:, None], torch.arange(sk)[None]
        s = s.masked_fill(j > i + sk - sq, float("-inf"))
    lse = torch.logsumexp(s, -1)
    return (torch.softmax(s, -1).nan_to_num(0.0) @ vd).transpose(1, 2), lse  # empty rows: 0


def test_types_stay_types_for_library_annotations(backend):
    with phyx_patches.scope(["torch_cuda"]):
        for t in (torch.cuda.Stream, torch.cuda.Event, torch.Generator, torch.cuda.amp.autocast,
                  torch.cuda.amp.GradScaler):
            assert isinstance(t, type), t
            assert (t | None) is not None          # PEP 604 annotations evaluate
        s, e = torch.cuda.Stream(), torch.cuda.Event(enable_timing=True)
        assert isinstance(s, torch.cuda.Stream) and isinstance(e, torch.cuda.Event)
        g = torch.Generator(device="cuda")
        assert isinstance(g, torch.Generator) and g.device.type == backend.device_type
        # modules that annotate `torch.cuda.Stream | None` at import time
        for name in ("transformers.generation.utils", "diffusers.hooks.group_offloading"):
            sys.modules.pop(name, None)
            importlib.import_module(name)
    assert torch.Generator is torch._C.Generator and torch.cuda.Stream.__module__ == "torch.cuda.streams"


def test_generator_and_new_tensors_on_cuda_land_on_the_backend(backend):
    dev = backend.device_type
    with phyx_patches.scope(["torch_cuda"]):
        g = torch.Generator(device="cuda").manual_seed(3)
        a = torch.randn(4, generator=g, device="cuda")
        b = torch.randn(4, generator=torch.Generator("cuda").manual_seed(3), device="cuda")
        assert torch.equal(a, b) and a.device.type == dev
        x = torch.ones(2)
        for t in (x.new_zeros(3, device="cuda"), x.new_ones((2,), device=torch.device("cuda")),
                  x.new_full((2,), 7.0, device="cuda:0"), x.new_empty(1, device="cuda"),
                  x.new_tensor([1.0], device="cuda")):
            assert t.device.type == dev
        assert x.to("cuda").is_cuda and torch.cuda.is_available()
    assert not torch.ones(1).is_cuda


def test_torch_cuda_queries_rng_and_nvtx_are_served(backend):
    with phyx_patches.scope(["torch_cuda"]):
        p = torch.cuda.get_device_properties(0)
        assert p.total_memory > 0 and (p.major, p.minor) == torch.cuda.get_device_capability()
        free, total = torch.cuda.mem_get_info()
        assert 0 <= free <= total and total > 0
        torch.cuda.manual_seed(5)
        st = torch.cuda.get_rng_state()
        a = torch.randn(3, device="cuda")
        torch.cuda.set_rng_state(st)
        assert torch.equal(a, torch.randn(3, device="cuda"))
        torch.cuda.nvtx.range_push("x")
        torch.cuda.nvtx.range_pop()
        with torch.cuda.nvtx.range("y"):
            pass
        with torch.cuda.amp.autocast(dtype=torch.bfloat16):
            assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16


def test_unserved_torch_cuda_call_names_phyx(backend):
    with phyx_patches.scope(["torch_cuda"]):
        with pytest.raises(RuntimeError, match=r"^phyx: torch\.cuda\.\w+\(\) needs a CUDA runtime"):
            torch.cuda.current_blas_handle()


@pytest.mark.parametrize("sq,sk,causal", [(9, 9, False), (9, 9, True), (11, 6, True), (5, 12, True)])
def test_private_flash_attn_forward_returns_out_and_lse(backend, sq, sk, causal):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, sq, 3, 16), torch.randn(2, sk, 3, 16), torch.randn(2, sk, 3, 16)
    want, want_lse = ref_attention(q, k, v, causal, 0.3)
    with phyx_patches.scope(["flash_attn"]):
        from flash_attn.flash_attn_interface import _flash_attn_forward

        out, lse, s_dmask, _rng = _flash_attn_forward(q, k, v, 0.0, 0.3, causal, -1, -1, 0.0, None, False)
        old = _flash_attn_forward(q, k, v, dropout_p=0.0, softmax_scale=0.3, causal=causal,
                                  window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                                  return_softmax=False)
    assert s_dmask is None and lse.shape == (2, 3, sq) and lse.dtype == torch.float32
    assert (out.double() - want).abs().max() < 1e-5
    live = torch.isfinite(want_lse)
    assert torch.equal(torch.isfinite(lse), live)
    assert (lse.double()[live] - want_lse[live]).abs().max() < 1e-5
    assert len(old) == 8 and torch.equal(old[0], out) and torch.equal(old[5], lse)


def test_private_flash_attn_varlen_forward_and_refusals(backend):
    torch.manual_seed(1)
    lens = [5, 3]
    q, k, v = (torch.randn(sum(lens), 2, 8) for _ in range(3))
    cu = torch.tensor([0, 5, 8], dtype=torch.int32)
    with phyx_patches.scope(["flash_attn"]):
        from flash_attn.flash_attn_interface import (
            _flash_attn_backward,
            _flash_attn_forward,
            _flash_attn_varlen_forward,
        )

        out, lse, _, _ = _flash_attn_varlen_forward(q, k, v, cu, cu, 5, 5, 0.0, None, True)
        with pytest.raises(UnsupportedArgumentError, match="autograd"):
            _flash_attn_backward(None, q, k, v, out, lse)
        with pytest.raises(UnsupportedArgumentError, match="window_size"):
            _flash_attn_forward(q[None], k[None], v[None], 0.0, None, False, 4, 0)
        with pytest.raises(UnsupportedArgumentError, match="dropout"):
            _flash_attn_forward(q[None], k[None], v[None], 0.1, None, False)
    assert out.shape == (8, 2, 8) and lse.shape == (2, 8)
    for a, b in ((0, 5), (5, 8)):
        want, want_lse = ref_attention(q[None, a:b], k[None, a:b], v[None, a:b], causal=True)
        assert (out[a:b].double() - want[0]).abs().max() < 1e-5
        assert (lse[:, a:b].double() - want_lse[0]).abs().max() < 1e-5


@pytest.mark.parametrize("mask_kind", ["bool", "additive", "causal"])
def test_attention_runs_under_autocast_on_every_backend(backend, mask_kind):
    torch.manual_seed(2)
    q, k, v = (torch.randn(1, 7, 2, 16) for _ in range(3))
    mask = torch.rand(1, 1, 7, 7) > 0.3
    mask[..., 0] = True
    kw = {"bool": {"attn_mask": mask}, "causal": {"is_causal": True},
          "additive": {"attn_mask": torch.zeros(1, 1, 7, 7).masked_fill(~mask, float("-inf"))}}[mask_kind]
    plain = phyx.ops.attention(q, k, v, **kw)
    with torch.autocast(backend.device_type, dtype=torch.bfloat16):
        got = phyx.ops.attention(q, k, v, **kw)
        got16 = phyx.ops.attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), **kw)
    assert got16.dtype == torch.bfloat16
    assert (got.float() - plain).abs().max() < 5e-2
    assert (got16.float() - plain).abs().max() < 5e-2


def test_flash_attn_compiled_module_refuses_clearly():
    with phyx_patches.scope(["flash_attn"]):
        import flash_attn_2_cuda

        with pytest.raises(AttributeError, match="not served.*_flash_attn_forward"):
            flash_attn_2_cuda.fwd


def test_import_bare_skips_package_inits(tmp_path):
    from phyx.tools.porting.imports import import_bare

    pkg = tmp_path / "upkg_bare"
    (pkg / "models" / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('the package init pulls in a pipeline')\n")
    (pkg / "models" / "__init__.py").write_text("import xfuser\n")
    (pkg / "models" / "sub" / "helpers.py").write_text("def two():\n    return 2\n")
    (pkg / "models" / "dit.py").write_text("import upkg_bare.models.sub.helpers as h\n"
                                           "from .sub.helpers import two\nVALUE = h.two() + two()\n")
    try:
        mod = import_bare("upkg_bare.models.dit", tmp_path)
        assert mod.VALUE == 4
        assert sys.modules["upkg_bare"].__file__ is None      # its __init__ never ran
    finally:
        for name in [n for n in sys.modules if n.startswith("upkg_bare")]:
            del sys.modules[name]
        sys.path.remove(str(tmp_path))
