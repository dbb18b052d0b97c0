"""Parity under autocast: layers recorded inside torch.autocast replay inside it (on every
backend), replay errors are printed, and a comparison where nothing was replayed never PASSes."""
from __future__ import annotations

import torch
from torch import nn

from phyx.tools.parity.compare import compare_runs, format_compare
from phyx.tools.parity.model import ParitySpec, record_run


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, x):
        import phyx.ops

        b, s, _ = x.shape
        h = self.fc1(x).view(b, s, 2, 16)
        a = phyx.ops.attention(h, h, h, attn_mask=torch.ones(1, 1, s, s, dtype=torch.bool))
        return self.fc2(a.reshape(b, s, 32))


def _spec(autocast: bool, break_replay: bool = False) -> ParitySpec:
    def build():
        torch.manual_seed(0)
        return nn.Sequential(Block(), Block())

    def forward(model, inputs, device, dt):
        if break_replay:   # the recorded layers take a kwarg the replay cannot give back
            for m in model:
                m.forward = lambda x, _f=m.forward, _tok=object(): _f(x)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=autocast):
            return model(inputs["x"].to(device))

    return ParitySpec("ac-tiny", build, lambda s: {"x": torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(s))},
                     forward, layers=("0", "1", "0.fc1"))


def test_layers_recorded_under_autocast_replay_under_it_on_every_backend():
    spec = _spec(True)
    a = record_run(spec, "cpu", "fp32")
    assert all(L.get("autocast") == {"device_type": "cpu", "dtype": "bfloat16"} for L in a.layers)
    for backend in ("cpu", "npu-emulated"):
        b = record_run(spec, backend, "fp32", replay_from=a)
        assert b.manifest["replay_errors"] == {}
        rep = compare_runs(a, b, dtype="bf16")   # an autocast run is judged at bf16 limits
        assert {r.evidence for r in rep.rows} == {"replay"}, format_compare(rep)
        assert rep.verdict == "PASS", format_compare(rep)


def test_nothing_replayed_is_not_a_pass_and_says_why(monkeypatch):
    import phyx.tools.parity.compare as C

    spec = _spec(False)
    a = record_run(spec, "cpu", "fp32")

    def broken(model, layer, args, kwargs, **kw):
        raise RuntimeError("mat1 and mat2 must have the same dtype")

    monkeypatch.setattr(C, "call_recorded", broken)
    b = record_run(spec, "cpu", "fp32", replay_from=a)
    rep = compare_runs(a, b)
    text = format_compare(rep)
    assert rep.verdict == "FAIL"
    assert all(r.status == "SKIP" for r in rep.rows)
    assert "mat1 and mat2 must have the same dtype" in text and "not replayed" in text
