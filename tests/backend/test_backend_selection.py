import os
import subprocess
import sys

import pytest
import torch

import phyx
from phyx.errors import BackendUnavailableError, LayoutError, UnknownBackendError, UnsupportedArgumentError


def _run(code, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("PHYX_BACKEND", "PHYX_POLICY")}
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=120)


def test_unknown_backend_lists_known():
    with pytest.raises(UnknownBackendError) as e:
        phyx.set_backend("tpu9000")
    msg = str(e.value)
    for name in ("cpu", "cuda", "npu", "npu-emulated"):
        assert name in msg


def test_cuda_unavailable_on_cpu_build():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(BackendUnavailableError, match="cuda"):
        phyx.set_backend("cuda")


def test_env_selection_and_reason():
    r = _run("import phyx; b=phyx.get_backend(); print(b.name); print(phyx.selection_reason())",
             PHYX_BACKEND="cpu")
    assert r.returncode == 0, r.stderr
    name, why = r.stdout.strip().splitlines()
    assert name == "cpu" and "PHYX_BACKEND=cpu" in why


def test_explicit_beats_env():
    r = _run("import phyx; phyx.set_backend('cpu', 'reference'); print(phyx.get_backend().name, phyx.get_policy())",
             PHYX_BACKEND="no-such-backend")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["cpu", "reference"]


def test_env_unknown_backend_is_clear():
    r = _run("import phyx; phyx.get_backend()", PHYX_BACKEND="no-such-backend")
    assert r.returncode != 0 and "known backends" in r.stderr


def test_autodetect_by_priority_npu_cuda_cpu_never_emulated(monkeypatch):
    """Autodetect probes every registered, non-emulated backend by its declared priority."""
    from phyx import backend as reg
    from phyx.backend.cpu import CpuBackend
    from phyx_cuda import CudaBackend
    from phyx_npu import NpuBackend
    from phyx_npu.emulated import NpuEmulatedBackend

    calls, ok = [], {"npu": True, "cuda": True}

    def fake(cls, name):
        class Fake(cls):
            @classmethod
            def probe(klass):
                calls.append(name)
                return ok.get(name, True), "fake"
        return Fake

    fakes = {"npu": fake(NpuBackend, "npu"), "cuda": fake(CudaBackend, "cuda"),
             "cpu": fake(CpuBackend, "cpu"), "npu-emulated": fake(NpuEmulatedBackend, "npu-emulated")}
    monkeypatch.setattr(reg, "registered_backends", lambda: {n: "tests" for n in fakes})
    monkeypatch.setattr(reg, "backend_class", lambda n: fakes[n])
    assert NpuBackend.priority > CudaBackend.priority > CpuBackend.priority
    name, why = reg.autodetect()
    assert name == "npu" and calls == ["npu"] and "autodetected (npu" in why
    ok["npu"] = False
    assert reg.autodetect()[0] == "cuda"
    ok["cuda"] = False
    calls.clear()
    name, why = reg.autodetect()
    assert name == "cpu" and calls == ["npu", "cuda", "cpu"] and "no accelerator" in why
    assert "npu-emulated" not in calls   # emulated backends are never autodetected


def test_autodetect_skips_a_broken_plugin_and_names_it(monkeypatch):
    from phyx import backend as reg

    orig_registered, orig_class = reg.registered_backends, reg.backend_class

    def broken(name):
        if name == "broken":
            raise ImportError("no module named vendor_runtime")
        return orig_class(name)

    monkeypatch.setattr(reg, "registered_backends", lambda: {**orig_registered(), "broken": "x:Y"})
    monkeypatch.setattr(reg, "backend_class", broken)
    name, why = reg.autodetect()
    assert name == "cpu" and "broken: plug-in failed to load" in why


def test_using_restores_and_reset_forgets(monkeypatch):
    monkeypatch.delenv("PHYX_BACKEND", raising=False)
    phyx.set_backend("cpu", "fast")
    phyx.ops.use_kernel("attention", "reference")
    before = phyx.get_backend()
    with phyx.backend.using("npu-emulated", "reference") as b:
        assert phyx.get_backend() is b and b.name == "npu-emulated" and phyx.get_policy() == "reference"
        with phyx.ops.kernel_override("attention", None):
            assert phyx.ops.pinned_kernel("attention") is None
        assert phyx.ops.pinned_kernel("attention") == "reference"
        phyx.ops.use_kernel("rms_norm", "torch_npu.npu_rms_norm")   # a pin made inside the block
    assert phyx.get_backend() is before and phyx.get_policy() == "fast"
    assert phyx.ops.chosen_kernels()["attention"] == "reference"   # the pin is back
    assert phyx.ops.pinned_kernel("rms_norm") is None               # the block's pin is gone
    phyx.backend.reset()
    assert phyx.ops.pinned_kernel("attention") is None and phyx.get_policy() == "fast"
    assert phyx.backend.selection_reason().startswith("autodetected")   # selected afresh
    assert phyx.ops.chosen_kernels()["attention"] == "torch.sdpa"


def test_policy_switch_changes_kernel_and_pin():
    phyx.set_backend("cpu", "fast")
    assert phyx.ops.chosen_kernels()["attention"] == "torch.sdpa"
    phyx.set_policy("reference")
    assert phyx.ops.chosen_kernels()["attention"] == "reference"
    phyx.ops.use_kernel("attention", "torch.sdpa")
    assert phyx.ops.chosen_kernels()["attention"] == "torch.sdpa"
    with pytest.raises(UnsupportedArgumentError, match="available"):
        phyx.ops.use_kernel("attention", "magic")
    phyx.ops.use_kernel("attention", None)
    assert phyx.ops.chosen_kernels()["attention"] == "reference"
    with pytest.raises(ValueError):
        phyx.set_policy("turbo")
    phyx.set_backend("cpu", "fast")


def test_sdpa_refuses_lse_instead_of_dropping():
    phyx.set_backend("cpu", "fast")
    q = torch.randn(1, 5, 2, 8)
    with pytest.raises(UnsupportedArgumentError, match="lse"):
        phyx.ops.attention(q, q, q, return_lse=True)
    with pytest.raises(UnsupportedArgumentError, match="q_lens"):
        phyx.ops.attention(q, q, q, q_lens=torch.tensor([3]))


def test_layout_errors():
    q = torch.randn(1, 2, 5, 8)
    with pytest.raises(LayoutError, match="B, S, N, D"):
        phyx.ops.attention(q[0], q[0], q[0])
    with pytest.raises(LayoutError, match="multiple of KV heads"):
        phyx.ops.attention(torch.randn(1, 5, 3, 8), torch.randn(1, 5, 2, 8), torch.randn(1, 5, 2, 8))
    with pytest.raises(LayoutError, match="bool"):
        phyx.ops.attention(q, q, q, torch.ones(1, 1, 2, 2, dtype=torch.int32))
    with pytest.raises(LayoutError, match="swiglu"):
        phyx.ops.swiglu(torch.randn(3, 5))


def test_info_cli_runs():
    r = subprocess.run([sys.executable, "-m", "phyx.cli", "info", "--backend", "cpu"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "backend   : cpu" in r.stdout and "attention" in r.stdout and "npu-emulated" in r.stdout
