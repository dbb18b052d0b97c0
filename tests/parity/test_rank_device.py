"""Parity runs put tensors on the rank's current device, never device 0: under NCCL / HCCL every
rank of a torchrun job would otherwise pile its tensors onto the first GPU / NPU.

No second device here, so a fake backend stands in for rank 1 of a two-device host: its device
module reports current_device() == 1 and its torch_device() records every index it is asked for
(the tensors stay on the CPU)."""
from __future__ import annotations

import pytest
import torch

from phyx.backend.base import DeviceModule
from phyx.backend.cpu import CpuBackend


class _Rank1Device(DeviceModule):
    def device_count(self):
        return 2

    def current_device(self):
        return 1     # torchrun's LOCAL_RANK 1 after set_device(1)


class Rank1Backend(CpuBackend):
    name = "fake-rank1"
    asked: list = []

    def __init__(self):
        self.device = _Rank1Device()

    def torch_device(self, index=None):
        self.asked.append(index)
        return torch.device("cpu")


@pytest.fixture
def rank1(monkeypatch):
    import phyx.backend as reg

    monkeypatch.setitem(reg.EXTRA_BACKENDS, Rank1Backend.name, Rank1Backend)
    Rank1Backend.asked.clear()
    return Rank1Backend.asked


def test_model_capture_uses_the_current_device(rank1):
    from phyx.tools.parity.model import get_model_spec, record_run

    record_run(get_model_spec("tiny-dit"), Rank1Backend.name, "fp32", per_op=True)
    assert rank1 and set(rank1) == {1}, rank1


def test_op_report_uses_the_current_device(rank1):
    from phyx.tools.parity.op_cases import op_cases
    from phyx.tools.parity.ops_report import run_op_parity

    cases = [c for c in op_cases() if c.op in ("rms_norm", "gelu")][:2]
    rep = run_op_parity([Rank1Backend.name], ["fp32"], cases=cases)
    assert rep.rows and rank1 and set(rank1) == {1}, rank1


def test_loss_run_uses_the_current_device(rank1):
    from phyx.tools.parity.loss import train

    def build():
        torch.manual_seed(0)
        return torch.nn.Linear(4, 4)

    def forward(model, batch, device, dtype):
        return model(batch["x"].to(device, dtype))

    inputs = {"x": torch.randn(2, 3, 4)}
    curve = train(build, inputs, forward, Rank1Backend.name, steps=1)
    assert len(curve.loss) == 1 and rank1 and set(rank1) == {1}, rank1


def test_phyx_device_resolves_the_current_index(rank1):
    import phyx
    from phyx.device import torch_device

    with phyx.backend.using(Rank1Backend.name):
        torch_device()
        torch_device(0)        # an explicit index is honoured as given
    assert rank1 == [1, 0]
