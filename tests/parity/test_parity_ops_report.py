"""`phyx parity ops`: the cross-backend op report catches planted kernel bugs, labels emulated
backends, skips unavailable ones with a note, and exits non-zero on a FAIL."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import phyx.backend as reg
from phyx.backend.base import Kernel, OpSupport
from phyx.backend.cpu import CpuBackend
from phyx.ops import reference
from phyx.tools.parity import ops_report as R
from phyx.tools.parity.op_cases import op_cases


def _gelu_always_tanh(x, approximate="none"):  # the NPU native-gelu trap
    return reference.gelu(x, "tanh")


def _attention_mask_not_inverted(q, k, v, attn_mask, kv_lens, q_lens, is_causal, scale, return_lse):
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = ~attn_mask
    return reference.attention(q, k, v, attn_mask, kv_lens, q_lens, is_causal, scale, return_lse)


class _PlantedEmulated(CpuBackend):
    """An emulated backend with two planted translation bugs."""

    name = "fake-emulated"
    emulated = True

    def kernels(self):
        feats = frozenset({"bool_mask", "additive_mask", "kv_lens", "q_lens", "causal", "gqa",
                           "lse", "scale"})
        return [Kernel("gelu", "planted.gelu", _gelu_always_tanh, OpSupport(), "fast"),
                Kernel("attention", "planted.attn", _attention_mask_not_inverted,
                       OpSupport(features=feats), "fast")]


@pytest.fixture
def planted(monkeypatch):
    orig_registered, orig_class = reg.registered_backends, reg.backend_class
    monkeypatch.setattr(reg, "registered_backends",
                        lambda: {**orig_registered(), "fake-emulated": "planted"})
    monkeypatch.setattr(reg, "backend_class",
                        lambda n: _PlantedEmulated if n == "fake-emulated" else orig_class(n))


def test_report_catches_and_locates_planted_bugs(planted):
    cases = [c for c in op_cases() if c.op in ("gelu", "attention", "silu")]
    rep = R.run_op_parity(["cpu", "fake-emulated"], ["fp32", "bf16"], cases=cases)
    assert rep.failed
    bad = {(r.op, r.case, r.dtype) for r in rep.rows if r.backend == "fake-emulated" and r.failed}
    assert ("gelu", "exact", "fp32") in bad
    assert ("attention", "bool_mask_masked_rows", "fp32") in bad
    assert ("attention", "bool_mask_masked_rows", "bf16") in bad
    # Located: nothing else fails, and the correct backend passes everywhere.
    assert all(op in ("gelu", "attention") for op, _, _ in bad)
    assert ("gelu", "tanh", "fp32") not in bad
    assert not [r for r in rep.rows if r.backend == "cpu" and r.failed]
    # Emulated rows are labelled as such everywhere they are shown.
    assert all(r.emulated for r in rep.rows if r.backend == "fake-emulated")
    table = R.format_table(rep)
    assert "fake-emulated (EMULATED)" in table
    summary = R.format_summary(rep)
    assert "never NPU results" in summary and "VERDICT: FAIL" in summary
    d = rep.to_dict()
    assert d["emulated_backends"] == ["fake-emulated"]
    # The planted attention kernel honours lse, the cpu fast kernel refuses it: no ratio then.
    lse_rows = [r for r in rep.rows if r.case == "lse_gqa2" and r.backend == "fake-emulated"]
    assert lse_rows and all(r.ratio_vs_baseline is None for r in lse_rows)


def test_error_ratio_against_the_same_oracle(planted):
    cases = [c for c in op_cases() if c.id == "gelu/exact"]
    rep = R.run_op_parity(["cpu", "fake-emulated"], ["fp32"], cases=cases)
    cpu, emu = sorted(rep.rows, key=lambda r: r.backend != "cpu")
    assert cpu.ratio_vs_baseline == 1.0
    assert emu.ratio_vs_baseline > 1e3  # tanh vs exact GELU: far above fp32 rounding


def test_unavailable_backend_is_skipped_with_a_note():
    rep = R.run_op_parity(["cpu", "no-such-backend"], ["fp32"],
                          cases=[c for c in op_cases() if c.op == "silu"])
    assert rep.backends == ["cpu"] and "no-such-backend" in rep.skipped
    assert "SKIPPED no-such-backend" in R.format_summary(rep)
    assert not rep.failed


def test_backend_selection_restored_after_report():
    import phyx

    phyx.set_backend("cpu", "reference")
    R.run_op_parity(["cpu"], ["fp32"], cases=[c for c in op_cases() if c.op == "relu2"])
    assert phyx.get_backend().name == "cpu" and phyx.get_policy() == "reference"
    phyx.set_backend("cpu", "fast")


def test_cli_writes_json_and_exit_code(tmp_path):
    out = tmp_path / "ops.json"
    env = {k: v for k, v in os.environ.items() if k not in ("PHYX_BACKEND", "PHYX_POLICY")}
    r = subprocess.run([sys.executable, "-m", "phyx.cli", "parity", "ops", "--dtypes", "fp32,bf16",
                        "--json", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "VERDICT: PASS" in r.stdout
    d = json.loads(out.read_text())
    assert "cpu" in d["backends"] and not d["failed"]
    ops_seen = {row["op"] for row in d["rows"]}
    from phyx.ops import OP_NAMES

    assert ops_seen == set(OP_NAMES)
    for b in d["backends"]:
        assert d["meta"]["backends"][b]["kernels"]
    if "npu-emulated" in d["backends"]:
        assert "npu-emulated (EMULATED)" in r.stdout
    else:
        assert "SKIPPED npu-emulated" in r.stdout
