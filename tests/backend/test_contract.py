"""The backend contract: every vendor hook is declared on Backend with a default, generic code
never probes a backend (hasattr) nor decides by a vendor's name, nothing outside phyx.ops /
phyx.backend touches the dispatch table's privates, the public scope APIs restore what they
change, and every module imports on its own (no import cycle)."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import phyx
from phyx.backend.base import Backend
from phyx.errors import UnsupportedArgumentError
from phyx.kernels.attention_adapter import contract_attention
from phyx.kernels.spec import ATTENTION_FEATURES, Feature, OpSupport
from phyx.ops import reference

REPO = Path(__file__).resolve().parents[2]

# Generic code (phyx/) asks the backend through declared hooks, never like this:
VENDOR_PROBES = re.compile(
    r"hasattr\(\s*(b|backend|be|self\.backend)\s*,"           # probing a backend for a hook
    r"|getattr\(\s*(b|backend|be)\s*,\s*['\"]\w+['\"]\s*,"      # ... or with a getattr default
    r"|\.name\.startswith\(\s*['\"](npu|cuda)"                 # deciding by a vendor's name
    r"|\bname\.startswith\(\s*['\"](npu|cuda)"
    r"|device_type\s*[!=]=\s*['\"](npu|cuda)['\"]"
    r"|\.startswith\(\s*['\"](npu|cuda)['\"]\s*\)"              # any string's vendor prefix
    r"|\b(backend|name|recorded_on|ref_on)['\"\]]*\s*[!=]=\s*['\"](npu|cuda)['\"]"  # a backend by name
    r"|^\s*(import|from)\s+torch_npu\b", re.M)
# Dispatch / registry privates, outside the two packages that own them:
PRIVATES = re.compile(r"_dispatch\.(_\w+|K\b)|\b_reg\._|backend\._active\b|\._pinned\b")


def _py_files(*roots):
    for root in roots:
        yield from sorted((REPO / root).rglob("*.py"))


def test_no_backend_probing_or_vendor_names_outside_backends():
    hits = []
    for path in _py_files("phyx"):
        for m in VENDOR_PROBES.finditer(path.read_text(encoding="utf-8")):
            hits.append(f"{path.relative_to(REPO)}: {m.group(0).strip()}")
    assert not hits, ("declare a Backend hook (phyx/backend/base.py) instead of probing or "
                      "naming a vendor:\n" + "\n".join(hits))


def test_the_grep_would_catch_a_regression():
    bad = 'if hasattr(b, "soc_info"):\nif backend.name.startswith("npu"):\nimport torch_npu\n'
    assert len(VENDOR_PROBES.findall(bad)) == 3
    for line in ('npu = c.backend.startswith("npu")', 'ok = env["backend"] == "cuda"', 'x = ref_on != "npu"'):
        assert VENDOR_PROBES.search(line), line
    assert not VENDOR_PROBES.search('return accelerator_of(c.backend, c.emulated) == "npu"')
    assert PRIVATES.search("x = _dispatch._pinned.get(op)") and PRIVATES.search("_dispatch.K.rope")


def test_no_dispatch_privates_outside_ops_and_backend():
    owners = (REPO / "phyx" / "ops", REPO / "phyx" / "backend")
    hits = []
    for path in _py_files("phyx", "tests", "benchmarks"):
        if path.parent in owners or path == Path(__file__).resolve():
            continue
        for m in PRIVATES.finditer(path.read_text(encoding="utf-8")):
            hits.append(f"{path.relative_to(REPO)}: {m.group(0)}")
    assert not hits, ("use phyx.backend.using/reset and phyx.ops.kernel_override/observe/"
                      "call_kernel instead:\n" + "\n".join(hits))


def test_every_hook_has_a_default():
    class Bare(Backend):
        name = "bare"

    b = Bare()
    assert b.hardware_info() == {} and Bare.determinism_env(debug=True) == {}
    assert Bare.comm_buffer_cost(object()) == {} and b.dist_env_defaults() == {}
    assert b.bench_direct_attention(None, None, None, False) == {}
    assert b.bench_candidate_kernels("rms_norm") == []
    assert b.host_env_vars == () and b.kernel_profiler_activity is None and not b.emulated
    assert b.set_reduced_precision_matmul(False) == {} and b.precision_flags() == {}


def test_default_profiler_writes_a_chrome_trace(tmp_path):
    class Bare(Backend):
        name = "bare"

    with Bare().profiler(str(tmp_path / "p")):
        torch.ones(3).sum()
    assert (tmp_path / "p" / "trace.json").is_file()


def test_vendor_hooks_are_declared_by_the_vendors():
    from phyx_cuda import CudaBackend
    from phyx_npu import NpuBackend
    from phyx_npu.emulated import NpuEmulatedBackend

    assert CudaBackend.determinism_env() == {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    assert NpuBackend.determinism_env(debug=True)["ASCEND_LAUNCH_BLOCKING"] == "1"
    assert "TASK_QUEUE_ENABLE" in NpuBackend.host_env_vars and CudaBackend.kernel_profiler_activity == "CUDA"
    from phyx.parallel import ParallelConfig

    assert NpuBackend.comm_buffer_cost(ParallelConfig(1, 4, 1), buffsize_mb=50)["mb_per_rank"] == 200
    assert NpuEmulatedBackend.comm_buffer_cost(ParallelConfig(1, 4, 1)) == {}   # gloo
    assert NpuEmulatedBackend().hardware_info()["soc"] == "Ascend910B3"
    assert "TASK_QUEUE_ENABLE" in phyx.backend.host_env_vars()


def test_feature_enum_keeps_string_compatibility():
    s = OpSupport(features=frozenset({"lse", Feature.CAUSAL}))
    assert s.features == {Feature.LSE, Feature.CAUSAL} and "lse" in s.features and s.supports("causal")
    assert ATTENTION_FEATURES - {"lse"} == ATTENTION_FEATURES - {Feature.LSE}
    with pytest.raises(UnsupportedArgumentError, match="'q_lens'"):
        s.require("k", Feature.Q_LENS)
    with pytest.raises(UnsupportedArgumentError, match="unknown kernel feature 'flash'"):
        OpSupport(features=frozenset({"flash"}))


def test_observe_sees_every_kernel_call_and_detaches():
    phyx.set_backend("cpu", "reference")
    seen = []
    x = torch.randn(2, 8)
    with phyx.ops.observe(lambda op, name, args, out: seen.append((op, name, args[0] is x, out))):
        y = phyx.ops.silu(x)
        phyx.set_policy("fast")          # a rebuild inside the block keeps the observer
        phyx.ops.rms_norm(x)
    phyx.ops.silu(x)
    assert [(op, name, same) for op, name, same, _ in seen] == [("silu", "reference", True),
                                                                ("rms_norm", "reference", True)]
    assert seen[0][3] is y
    phyx.set_backend("cpu", "fast")


def test_kernel_override_restores_on_error_and_call_kernel_uses_the_choice():
    phyx.set_backend("cpu", "fast")
    q = torch.randn(1, 4, 2, 8)
    with pytest.raises(RuntimeError, match="boom"):
        with phyx.ops.kernel_override("attention", "reference") as k:
            assert k.name == "reference" and phyx.ops.pinned_kernel("attention") == "reference"
            raise RuntimeError("boom")
    assert phyx.ops.pinned_kernel("attention") is None
    assert phyx.ops.chosen_kernels()["attention"] == "torch.sdpa"
    out = phyx.ops.call_kernel("attention", q, q, q, None, None, None, False, None, False)
    torch.testing.assert_close(out, reference.attention(q, q, q))
    with pytest.raises(ValueError, match="unknown op"):
        phyx.ops.call_kernel("softmax", q)


def _garbage_core(calls):
    def core(q, k, v, mask, is_causal, scale, return_lse):
        calls.append((k.shape[1], None if mask is None else tuple(mask.shape)))
        out = torch.full((q.shape[0], q.shape[1], q.shape[2], v.shape[-1]), 7.0)
        lse = torch.full((q.shape[0], q.shape[2], q.shape[1]), 3.0)
        return (out, lse) if return_lse else out
    return core


def test_attention_adapter_contract():
    calls = []
    attn = contract_attention(_garbage_core(calls), OpSupport(features=ATTENTION_FEATURES), "t")
    q = torch.randn(2, 3, 2, 4)
    k = torch.randn(2, 5, 2, 4)
    # kv_lens: one sliced call when lengths agree; per batch element otherwise; length 0: no call
    attn(q, k, k, kv_lens=torch.tensor([4, 4]))
    assert calls == [(4, None)]
    calls.clear()
    out, lse = attn(q, k, k, kv_lens=torch.tensor([0, 2]), return_lse=True)
    assert calls == [(2, None)]
    assert torch.all(out[0] == 0) and torch.all(lse[0] == float("-inf")) and torch.all(out[1] == 7)
    # dead rows (mask leaves no key) and padded query rows: 0 / -inf whatever the core wrote
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1] = False
    out, lse = attn(q, k, k, mask, q_lens=torch.tensor([3, 2]), return_lse=True)
    assert torch.all(out[:, 1] == 0) and torch.all(lse[:, :, 1] == float("-inf"))
    assert torch.all(out[1, 2] == 0) and torch.all(out[0, 2] == 7) and torch.all(out[:, 0] == 7)
    with pytest.raises(ValueError, match="out of range"):
        attn(q, k, k, kv_lens=torch.tensor([6, 1]))
    narrow = contract_attention(_garbage_core([]), OpSupport(features=frozenset({"kv_lens"})), "narrow")
    with pytest.raises(UnsupportedArgumentError, match="narrow.*'causal'"):
        narrow(q, k, k, is_causal=True)


def test_every_module_imports_alone():
    """One interpreter; before each module, every phyx* module is dropped from sys.modules, so
    each import starts from nothing of phyx: a cycle fails here with a partially-initialised
    module. Optional third-party packages that are absent are not phyx's cycles."""
    script = textwrap.dedent("""
        import importlib, pkgutil, sys
        import torch  # noqa: F401 - cached for every round; only phyx is re-imported
        import phyx, phyx_cuda, phyx_npu
        names = [m.name for pkg in (phyx, phyx_cuda, phyx_npu)
                 for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")
                 if not m.name.endswith("__main__")]
        names += ["phyx", "phyx_cuda", "phyx_npu"]
        bad = []
        for n in names:
            for k in [k for k in sys.modules if k.split(".")[0].startswith("phyx")]:
                del sys.modules[k]
            try:
                importlib.import_module(n)
            except ModuleNotFoundError as e:
                if (e.name or "").split(".")[0].startswith("phyx"):
                    bad.append(f"{n}: {e!r}")
            except Exception as e:
                bad.append(f"{n}: {type(e).__name__}: {e}")
        print(len(names))
        print("\\n".join(bad))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    count, *bad = r.stdout.strip().splitlines()
    assert int(count) > 100 and not [b for b in bad if b], "\n".join(bad)


def test_accelerator_of_reads_the_declared_hardware_never_a_name_prefix():
    """Reports call a run an NPU result from the backend's declared `accelerator`: the emulated NPU
    and names phyx does not know (read from someone's artifact) stand for no hardware."""
    from phyx.backend import accelerator_of

    assert accelerator_of("npu") == "npu" and accelerator_of("cuda") == "gpu" and accelerator_of("cpu") == "cpu"
    assert accelerator_of("npu-emulated") is None and accelerator_of("npu", emulated=True) is None
    assert accelerator_of("npu-lookalike") is None and accelerator_of(None) is None
