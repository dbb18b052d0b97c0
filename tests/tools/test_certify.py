"""`phyx certify`: the first-NPU-contact certificate, rehearsed on npu-emulated against the shipped
reference set, plus the pieces that must be able to fail (planted emulator bugs, tampered
artifacts, usage errors)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from phyx.cli import main
from phyx.tools.certify import artifacts as ART
from phyx.tools.certify import sections
from phyx.tools.certify.verdict import FAIL, PASS, UNSETTLED, Check, emulated_unsettled, overall
from phyx_npu import certify_facts as F
from phyx_npu.emulated import NpuEmulatedBackend
from phyx_npu.emulator import EmulatedTorchNpu

SECTIONS = {"ops", "facts", "models", "loss"}


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """One real run of the command, in a subprocess (it switches determinism on process-wide)."""
    out = tmp_path_factory.mktemp("cert")
    p = subprocess.run([sys.executable, "-m", "phyx.cli", "certify", "--backend", "npu-emulated",
                        "--out", str(out)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    return p, out


def test_rehearsal_passes_and_says_emulated_everywhere(rehearsal):
    p, out = rehearsal
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads((out / "certificate.json").read_text())
    assert rep["emulated"] is True and rep["npu_result"] is False
    assert rep["overall"]["verdict"] == PASS and rep["overall"]["label"].startswith("EMULATED")
    checks = rep["checks"]
    assert {c["section"] for c in checks} == SECTIONS
    assert all(c["emulated"] for c in checks)
    # hardware facts are never PASS on the emulator; each shows the fact and a reason
    facts = [c for c in checks if c["section"] == "facts"]
    assert [c["name"] for c in facts] == [n for n, _, _ in F.FACTS]
    assert {c["verdict"] for c in facts} == {UNSETTLED}
    assert all(c["fact"] and "emulated" in c["reason"] for c in facts)
    # every family in both dtypes, against the shipped set, which says where it was recorded
    models = {c["name"] for c in checks if c["section"] == "models"}
    assert models == {f"model:{m}:{d}" for m, _ in ART.MODELS.values() for d in ART.DTYPES}
    assert rep["artifacts"]["recorded_on"] == ART.load_manifest(ART.SHIPPED)["recorded_on"]
    assert {c["name"] for c in checks if c["section"] == "loss"} == {
        f"loss:{m}:vs-{t}" for m in ART.LOSS_MODELS for t in ("shipped", "live-cpu")}
    assert len([c for c in checks if c["section"] == "ops"]) >= 10
    assert all(c["verdict"] == PASS for c in checks if c["section"] != "facts")
    # the markdown never shows a bare verdict: every row and heading carries EMULATED
    md = (out / "certificate.md").read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| check")]
    assert len(rows) == len(checks) and all("(EMULATED)" in r for r in rows)
    assert all("EMULATED" in ln for ln in md.splitlines() if ln.startswith("#"))
    assert (out / "ops_parity.json").exists() and (out / "models" / "tiny-wan-t2v-bf16.json").exists()
    assert not [f for f in os.listdir(out) if f.startswith(".")]   # no temp files left behind


def test_shipped_set_is_labelled_honestly():
    m = ART.load_manifest(ART.SHIPPED)
    assert m["recorded_on"] == m["environment"]["backend"]
    if m["recorded_on"] != "cuda":
        assert "STAND-IN" in m["note"] and "--backend cuda" in m["note"]
    for e in m["models"]:
        assert os.path.exists(os.path.join(ART.SHIPPED, e["path"], "tensors.safetensors"))


@pytest.mark.parametrize("argv,msg", [
    (["certify", "--backend", "cpu"], "use --backend npu"),
    (["certify", "--backend", "npu"], "not available here"),
    (["certify", "record", "--backend", "npu-emulated", "--out", "x"], "record on a GPU"),
    (["certify", "record", "--backend", "cpu"], "needs --out"),
])
def test_usage_errors_exit_2(argv, msg, capsys):
    assert main(argv) == 2
    assert msg in capsys.readouterr().err


def test_missing_reference_set_is_a_clear_error(tmp_path, capsys):
    assert main(["certify", "--backend", "npu-emulated", "--artifacts", str(tmp_path)]) == 2
    assert "phyx certify record" in capsys.readouterr().err


def test_failed_check_exits_1(monkeypatch):
    import phyx.tools.certify as C

    bad = overall([Check("facts", "x", "a fact", FAIL, "planted")], emulated=False)
    monkeypatch.setattr(C, "run_certificate", lambda *a, **k: {"overall": bad})
    assert main(["certify", "--backend", "npu"]) == 1


def test_tampered_artifact_fails_its_model_check(tmp_path, monkeypatch):
    root = tmp_path / "set"
    shutil.copytree(ART.SHIPPED, root)
    model, dt = "tiny-cosmos3-video", "fp32"
    path = os.path.join(ART.artifact_dir(root, model, dt), "tensors.safetensors")
    data = bytearray(open(path, "rb").read())
    data[-3] ^= 0xFF
    open(path, "wb").write(bytes(data))
    monkeypatch.setattr(ART, "MODELS", {"cosmos3": ART.MODELS["cosmos3"]})   # one family: fast
    checks = sections.model_parity("npu-emulated", True, root, ART.load_manifest(root), str(tmp_path))
    got = {c.name: c for c in checks}
    assert got[f"model:{model}:{dt}"].verdict == FAIL and "sha256" in got[f"model:{model}:{dt}"].reason.lower()
    assert got[f"model:{model}:bf16"].verdict == PASS


def test_emulated_fact_is_never_pass():
    c = emulated_unsettled(Check("facts", "f", "a fact", PASS, "measured", emulated=True))
    assert c.verdict == UNSETTLED and c.measured["rehearsal_verdict"] == PASS
    real = emulated_unsettled(Check("facts", "f", "a fact", PASS, "measured", emulated=False))
    assert real.verdict == PASS


# ----------------------------------------------------- the fact tests themselves can fail
@pytest.fixture
def backend():
    return NpuEmulatedBackend()


def test_fact_tests_pass_on_the_emulators_reading_of_the_docs(backend):
    for fn in (F.fa_on_800i_a2, F.rms_norm_rounding, F.rotary_interleave_jit, F.fia_full_mask_multi_query,
               F.fa_fp32_not_hf32):
        verdict, reason, _ = fn(backend)
        assert verdict == PASS, (fn.__name__, reason)


def test_rms_norm_fact_detects_round_then_gamma(backend, monkeypatch):
    def round_first(self, gamma, epsilon=1e-6):
        xf = self.float()
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + epsilon)
        return ((xf * rstd).to(self.dtype) * gamma).to(self.dtype), rstd
    monkeypatch.setattr(backend.tnpu, "npu_rms_norm", round_first)
    verdict, reason, m = F.rms_norm_rounding(backend)
    assert verdict == FAIL and "round-then-gamma" in reason and m["match_round_then_gamma"] == 1.0


def test_hf32_fact_detects_hf32_inside_fp32_attention(backend, monkeypatch):
    def hf32(query, key, value, head_num, input_layout, scale=1.0, **kw):   # both matmuls in HF32
        r = F._round_mantissa
        s = torch.einsum("bqnd,bknd->bnqk", r(query), r(key)) * scale
        return (torch.einsum("bnqk,bknd->bqnd", r(torch.softmax(s, -1)), r(value)),)
    monkeypatch.setattr(backend.tnpu, "npu_fusion_attention", hf32)
    verdict, reason, _ = F.fa_fp32_not_hf32(backend)
    assert verdict == FAIL and "HF32" in reason


def test_rotary_fact_detects_an_unneeded_fallback(backend, monkeypatch):
    monkeypatch.setattr(backend.tnpu, "npu_rotary_mul", EmulatedTorchNpu.npu_rotary_mul)  # no jit check
    verdict, reason, _ = F.rotary_interleave_jit(backend)
    assert verdict == FAIL and "fused_rope_ok" in reason
    assert backend.tnpu.npu.is_jit_compile_false() is True   # compile mode restored


def test_fia_fact_detects_an_inverted_mask(backend, monkeypatch):
    real = backend.tnpu.npu_fused_infer_attention_score

    def inverted(q, k, v, *, atten_mask=None, **kw):
        return real(q, k, v, atten_mask=~atten_mask, **kw)
    monkeypatch.setattr(backend.tnpu, "npu_fused_infer_attention_score", inverted)
    verdict, _, m = F.fia_full_mask_multi_query(backend)
    assert verdict == FAIL and m["rel_l2"] > m["limit"]


def test_a_crashing_fact_is_a_fail_not_a_crash(monkeypatch):
    b = NpuEmulatedBackend()
    b.emulated = False   # judge it as hardware would be judged
    monkeypatch.setattr(b.tnpu, "npu_rms_norm", lambda *a, **k: 1 / 0)
    checks = {c.name: c for c in F.run_facts(b)}
    assert checks["rms_norm-rounding"].verdict == FAIL and "ZeroDivisionError" in checks["rms_norm-rounding"].reason


def test_stale_set_is_named_not_reported_as_divergence(tmp_path, monkeypatch):
    every = dict(ART.MODELS)
    cosmos3 = every["cosmos3"][0]
    wan = every["wan"][0]
    m = dict(ART.load_manifest(ART.SHIPPED))
    m["fingerprints"] = {cosmos3: ART.fingerprint(cosmos3)}
    monkeypatch.setattr(ART, "MODELS", {"cosmos3": every["cosmos3"]})
    assert ART.stale(m, cosmos3) is None               # the model phyx builds now matches
    m["fingerprints"][cosmos3] = "0" * 64               # a set recorded before the model changed
    checks = sections.model_parity("npu-emulated", True, ART.SHIPPED, m, str(tmp_path))
    assert len(checks) == 2 and all(c.verdict == FAIL and "stale" in c.reason for c in checks)
    monkeypatch.setattr(ART, "MODELS", every)
    monkeypatch.setattr(ART, "LOSS_MODELS", (wan,))
    m["fingerprints"][wan] = "0" * 64
    loss = sections.loss_window("npu-emulated", True, ART.SHIPPED, m, str(tmp_path))
    assert len(loss) == 2 and all(c.verdict == FAIL and "re-record" in c.reason for c in loss)
