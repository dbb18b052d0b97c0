"""Shared pytest integration: run backend-parametrised tests over the backends available here.

    pytest                          # every backend that probes available (cpu, npu-emulated, ...)
    pytest --backend npu            # on an NPU machine: the same tests on the real NPU
    pytest --backend cpu,npu-emulated

A test opts in by taking the `backend_name` argument (parametrised here) or the `phyx_backend`
fixture (makes that backend active for the test, then restores the previous selection).
A backend named explicitly with --backend that is not available is a usage error, not a skip:
a user who asked for the NPU must not get a green run that never touched it.
"""
from __future__ import annotations

import os

import pytest
import torch

# Without a GPU, Triton kernels can only run through Triton's interpreter (numpy on the CPU),
# and that must be chosen before triton is first imported: its own library functions are
# decorated at import time. tests/backend/test_triton_kernels.py relies on it.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def one_thread():
    """Tiny ops on 2 shared cores: torch's intra-op thread pool only adds contention."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_addoption(parser):
    parser.addoption("--backend", action="store", default=None,
                     help="comma list of phyx backends for backend-parametrised tests "
                          "(default: every backend available here)")


def _selected_backends(config) -> list[str]:
    cached = getattr(config, "_phyx_backends", None)
    if cached is not None:
        return cached
    from phyx.tools.parity.backends import resolve_backends

    opt = config.getoption("--backend")
    requested = [b.strip() for b in opt.split(",") if b.strip()] if opt else None
    usable, skipped = resolve_backends(requested)
    if requested and skipped:
        raise pytest.UsageError("--backend asked for unavailable backend(s): " + "; ".join(
            f"{n}: {why}" for n, why in skipped.items()))
    config._phyx_backends = usable
    config._phyx_backends_skipped = skipped
    return usable


def pytest_report_header(config):
    try:
        usable = _selected_backends(config)
    except pytest.UsageError:
        raise
    except Exception as e:  # never break collection for other helpers' tests
        return f"phyx backends: unavailable ({e})"
    skipped = getattr(config, "_phyx_backends_skipped", {})
    note = "".join(f"\n  skipped {n}: {why}" for n, why in skipped.items())
    return f"phyx backends under test: {', '.join(usable)}{note}"


def pytest_generate_tests(metafunc):
    if "backend_name" in metafunc.fixturenames:
        metafunc.parametrize("backend_name", _selected_backends(metafunc.config))


@pytest.fixture
def phyx_backend(backend_name):
    """The backend object for `backend_name`, active (policy 'fast') for the test's duration."""
    from phyx.tools.parity.backends import using_backend

    with using_backend(backend_name, "fast") as b:
        yield b
