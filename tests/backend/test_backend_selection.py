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


def test_autodetect_order_npu_before_cuda(monkeypatch):
    from phyx import backend as reg

    calls = []

    class Fake:
        def __init__(self, name, ok):
            self.n, self.ok = name, ok

        def probe(self):
            calls.append(self.n)
            return self.ok, "fake"

    fakes = {"npu": Fake("npu", True), "cuda": Fake("cuda", True)}
    monkeypatch.setattr(reg, "backend_class", lambda n: fakes[n])
    name, why = reg.autodetect()
    assert name == "npu" and calls == ["npu"]
    fakes["npu"].ok = False
    assert reg.autodetect()[0] == "cuda"
    fakes["cuda"].ok = False
    assert reg.autodetect()[0] == "cpu"


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
