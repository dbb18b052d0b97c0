"""Sections (a), (c) and (d) of the certificate: the op parity matrix, tiny-model parity against
the shipped GPU artifacts, and the loss-parity window. Each returns Check records and writes its
full report (JSON, atomic) next to the certificate."""
from __future__ import annotations

import json
import os

from phyx.io.atomic import write_text_atomic
from phyx.tools.certify import artifacts as ART
from phyx.tools.certify.verdict import FAIL, PASS, SKIPPED, Check

OP_DTYPES = ("fp32", "bf16", "fp16")
_EMU = "emulated: proves the translation against the CPU emulation, not NPU numerics"


def op_matrix(backend: str, emulated: bool, out_dir: str) -> list[Check]:
    """(a) every op on the CPU reference and on `backend` (policy fast) vs a float64 oracle."""
    from phyx.tools.parity import ops_report as R

    rep = R.run_op_parity(["cpu", backend], list(OP_DTYPES), policy="fast")
    R.write_json(rep, os.path.join(out_dir, "ops_parity.json"))
    checks = []
    for op in sorted({r.op for r in rep.rows}):
        rows = [r for r in rep.rows if r.op == op and r.backend == backend]
        if not rows:
            checks.append(Check("ops", f"op:{op}", f"{op} on {backend} matches the float64 oracle",
                                SKIPPED, f"{backend} did not run: {rep.skipped.get(backend, '?')}", emulated))
            continue
        bad = [r for r in rows if r.failed]
        refused = sum(r.status == "REFUSED" for r in rows)
        kernels = sorted({r.kernel for r in rows})
        why = "; ".join(f"{r.case}/{r.dtype}/{r.output}: {r.status} {r.reason}"[:160] for r in bad[:3])
        note = f"{len(rows) - len(bad)}/{len(rows)} cases pass ({refused} refused clearly), kernels {kernels}"
        checks.append(Check("ops", f"op:{op}", f"{op} on {backend} (policy fast) matches the float64 "
                            f"oracle in {', '.join(OP_DTYPES)}", FAIL if bad else PASS,
                            (why or note) + (f"; {_EMU}" if emulated else ""), emulated,
                            {"cases": len(rows), "failed": len(bad), "refused": refused, "kernels": kernels}))
    return checks


def model_parity(backend: str, emulated: bool, root, manifest: dict, out_dir: str) -> list[Check]:
    """(c) each family's tiny model on `backend`, every captured layer replayed from the shipped
    artifact's inputs and compared with it (per-layer local error + output drift)."""
    from phyx.tools.parity import artifact as A
    from phyx.tools.parity.compare import compare_runs
    from phyx.tools.parity.model import record_run

    ref_on = manifest["recorded_on"]
    stand_in = "" if ART.recorded_on_gpu(manifest) else f"; reference recorded on {ref_on} (a stand-in, not a GPU)"
    checks = []
    for family, (model, _) in ART.MODELS.items():
        for dt in ART.DTYPES:
            name = f"model:{model}:{dt}"
            fact = f"{family} ({model}, {dt}) on {backend} matches the {ref_on} artifact layer by layer"
            why_stale = ART.stale(manifest, model)
            if why_stale:
                checks.append(Check("models", name, fact, FAIL, why_stale, emulated))
                continue
            try:
                ref = A.read(ART.artifact_dir(root, model, dt))
                run = record_run(ART.certify_spec(model), backend, dt, replay_from=ref)
                rep = compare_runs(ref, run)
            except Exception as e:   # an unreadable or incomparable artifact is a failed check
                checks.append(Check("models", name, fact, FAIL, f"{type(e).__name__}: {e}"[:400], emulated))
                continue
            write_text_atomic(os.path.join(out_dir, "models", f"{model}-{dt}.json"),
                              json.dumps(rep.to_dict(), indent=1, default=str))
            worst = max((r.worst() or 0.0 for r in rep.rows), default=0.0)
            reason = (f"first divergence at {rep.first_divergence}" if rep.failed else
                      f"{len(rep.rows)} layers, worst local rel_l2 {worst:.2e}")
            checks.append(Check("models", name, fact, rep.verdict,
                                reason + stand_in + (f"; {_EMU}" if emulated else ""), emulated,
                                {"layers": len(rep.rows), "worst_rel_l2": worst,
                                 "first_divergence": rep.first_divergence}))
    return checks


def loss_window(backend: str, emulated: bool, root, manifest: dict, out_dir: str) -> list[Check]:
    """(d) a short training run on `backend`: its loss / grad-norm windows against the shipped
    curve and against a live CPU run of the same draws."""
    from phyx.tools.parity.loss import TrainCurve, compare_training, train_spec

    checks = []
    for model in ART.LOSS_MODELS:
        spec = ART.certify_spec(model)
        why_stale = ART.stale(manifest, model)
        if why_stale:
            checks += [Check("loss", f"loss:{model}:vs-{tag}", f"{model} loss window vs the {tag} curve",
                             FAIL, why_stale, emulated) for tag in ("shipped", "live-cpu")]
            continue
        with open(ART.loss_file(root, model), encoding="utf-8") as f:
            stored = json.load(f)
        ref = TrainCurve(stored["backend"], bool(stored["emulated"]), stored["dtype"],
                         list(stored["loss"]), list(stored["grad_norm"]))
        mine = train_spec(spec, backend, steps=ART.LOSS_STEPS, dtype=ART.LOSS_DTYPE)
        cpu = train_spec(spec, "cpu", steps=ART.LOSS_STEPS, dtype=ART.LOSS_DTYPE)
        for tag, label, base in (("shipped", f"shipped {ref.backend}", ref), ("live-cpu", "live cpu", cpu)):
            res = compare_training(base, mine, window=ART.LOSS_WINDOW)
            worst = max(res.loss_windows + res.grad_norm_windows, default=0.0)
            write_text_atomic(os.path.join(out_dir, "loss", f"{model}-vs-{tag}.json"),
                              json.dumps(res.to_dict(), indent=1, default=str))
            checks.append(Check(
                "loss", f"loss:{model}:vs-{tag}",
                f"{model} trained {ART.LOSS_STEPS} steps on {backend}: loss and grad-norm windows of "
                f"{ART.LOSS_WINDOW} steps within {res.limit:.0%} of the {label} curve", res.verdict,
                f"worst window {worst:.2e}" + (f"; {_EMU}" if emulated else ""), emulated,
                {"loss_windows": res.loss_windows, "grad_norm_windows": res.grad_norm_windows}))
    return checks
