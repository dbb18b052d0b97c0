"""The third-party backend template installs with pip and is selected by name, without any
change to phyx (entry-point group "phyx.backends")."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import phyx
from phyx.backend import registered_backends
from phyx.errors import UnknownBackendError
from phyx.ops import reference

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "backends" / "template"


def _pip_install(work: Path, priority: int | None = None) -> Path:
    """A real `pip install` of the template into a private target directory (~3 s); with
    `priority`, the copy's backend declares it (the template's own stays below cpu)."""
    src = work / "src"
    shutil.copytree(TEMPLATE, src)   # build in a copy: leave no build/ or egg-info in the repo
    if priority is not None:
        backend_py = src / "phyx_cpu_demo" / "backend.py"
        text = backend_py.read_text()
        assert "    priority = -10\n" in text
        backend_py.write_text(text.replace("    priority = -10\n", f"    priority = {priority}\n"))
    target = work / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--no-build-isolation", "--no-index", "--target", str(target), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (target / "phyx_cpu_demo" / "backend.py").exists()
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    return _pip_install(tmp_path_factory.mktemp("plugin"))


def _drop_demo_modules():
    for name in [m for m in sys.modules if m == "phyx_cpu_demo" or m.startswith("phyx_cpu_demo.")]:
        del sys.modules[name]


@pytest.fixture
def on_path(installed, monkeypatch):
    monkeypatch.syspath_prepend(str(installed))
    yield installed
    _drop_demo_modules()


def test_template_is_never_autodetected_as_shipped(on_path):
    from phyx.backend import autodetect, backend_class

    assert backend_class("cpu-demo").priority < backend_class("cpu").priority
    assert autodetect()[0] == "cpu"


def test_a_plugin_with_priority_above_cpu_is_autodetected(tmp_path, monkeypatch):
    """Installed from the template with an available probe and priority 5 (above cpu's 0, below
    cuda's 10 and npu's 20, which are unavailable here): autodetect picks it, with no change to
    phyx."""
    monkeypatch.delenv("PHYX_BACKEND", raising=False)
    site = _pip_install(tmp_path, priority=5)
    monkeypatch.syspath_prepend(str(site))
    try:
        from phyx.backend import autodetect

        name, why = autodetect()
        assert name == "cpu-demo" and "autodetected (cpu-demo" in why
        phyx.backend.reset()
        assert phyx.get_backend().name == "cpu-demo" and phyx.ops.chosen_kernels()["rms_norm"] == "cpu-demo.rms_norm"
    finally:
        phyx.backend.reset()
        _drop_demo_modules()


def test_template_is_found_and_selected_by_name(on_path):
    from phyx.tools.parity.backends import using_backend

    assert registered_backends()["cpu-demo"] == "phyx_cpu_demo:CpuDemoBackend"
    x = torch.randn(3, 5, 16)
    w = torch.randn(16)
    with using_backend("cpu-demo", "fast"):
        b = phyx.get_backend()
        assert b.name == "cpu-demo" and type(b).__module__ == "phyx_cpu_demo.backend"
        assert phyx.ops.chosen_kernels()["rms_norm"] == "cpu-demo.rms_norm"
        from phyx_cpu_demo.kernels import CALLS
        before = CALLS["rms_norm"]
        y = phyx.ops.rms_norm(x, w, 1e-6)
        assert CALLS["rms_norm"] == before + 1
        torch.testing.assert_close(y, reference.rms_norm(x, w, 1e-6), rtol=1e-6, atol=1e-6)
        yb = phyx.ops.rms_norm(x.bfloat16(), w.bfloat16(), 1e-6)
        assert torch.equal(yb, reference.rms_norm(x.bfloat16(), w.bfloat16(), 1e-6))
        phyx.set_policy("reference")   # the reference policy never picks vendor kernels
        assert phyx.ops.chosen_kernels()["rms_norm"] == "reference"


def test_phyx_itself_does_not_name_the_plugin(on_path):
    for path in (REPO / "phyx").rglob("*.py"):
        assert "cpu-demo" not in path.read_text(encoding="utf-8"), path
    assert "cpu-demo" not in (REPO / "pyproject.toml").read_text()


def test_without_the_plugin_the_name_is_unknown():
    assert "cpu-demo" not in registered_backends()
    with pytest.raises(UnknownBackendError, match="phyx.backends"):
        phyx.set_backend("cpu-demo")
