"""Op-level cross-backend parity: every op on seeded odd-shaped inputs, on each backend, against a
float64 CPU oracle (phyx.ops.reference on float64 copies); one table, one verdict.

The error ratio column is backend X's rel_l2 divided by the baseline backend's (the first one,
cpu by default), both measured against the same oracle: a ratio far above 1 means X rounds worse
than the reference platform even when both pass their dtype threshold.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field

import torch

from phyx.device import torch_device
from phyx.errors import UnsupportedArgumentError
from phyx.ops import reference
from phyx.tools.parity import metrics as M
from phyx.tools.parity.backends import EMULATED_NOTE, is_emulated, label, resolve_backends, using_backend
from phyx.tools.parity.op_cases import OpCase, as_outputs, make_inputs, op_cases, to_device

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
REFUSED, ERROR = "REFUSED", "ERROR"


@dataclass
class OpRow:
    op: str
    case: str
    output: str
    backend: str
    emulated: bool
    dtype: str
    kernel: str
    status: str                  # PASS | WARN | FAIL | REFUSED | ERROR
    reason: str = ""
    metrics: dict | None = None
    ratio_vs_baseline: float | None = None

    @property
    def failed(self) -> bool:
        return self.status in (M.FAIL, ERROR)


@dataclass
class OpReport:
    rows: list[OpRow]
    backends: list[str]
    skipped: dict[str, str]
    policy: str
    seed: int
    dtypes: list[str]
    meta: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(r.failed for r in self.rows)

    def to_dict(self) -> dict:
        return {"backends": self.backends, "skipped": self.skipped, "policy": self.policy,
                "seed": self.seed, "dtypes": self.dtypes, "meta": self.meta,
                "emulated_backends": [b for b in self.backends if is_emulated(b)],
                "emulated_note": EMULATED_NOTE, "failed": self.failed,
                "rows": [asdict(r) for r in self.rows]}


def oracle(case: OpCase, args, kwargs) -> tuple[torch.Tensor, ...]:
    """phyx.ops.reference on float64 copies of the (already rounded) inputs, on the CPU."""
    a64, k64 = to_device(args, kwargs, "cpu", torch.float64)
    return as_outputs(getattr(reference, case.op)(*a64, **k64))


def _run_case(case: OpCase, args, kwargs, device):
    import phyx.ops as ops

    a, k = to_device(args, kwargs, device)
    out = getattr(ops, case.op)(*a, **k)
    return tuple(o.detach().cpu() for o in as_outputs(out))


def run_op_parity(backends: list[str] | None = None, dtypes: list[str] | None = None,
                  policy: str = "fast", seed: int = 0, cases: list[OpCase] | None = None,
                  progress=None) -> OpReport:
    """Run every case x dtype on every usable backend. Backends that are not available here
    (or whose plug-in does not import yet) are skipped with a note, never a crash."""
    dtypes = list(dtypes or DTYPES)
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"unknown dtype {d!r}; choose from {list(DTYPES)}")
    cases = cases if cases is not None else op_cases()
    usable, skipped = resolve_backends(backends)
    inputs = {(c.id, d): make_inputs(c, DTYPES[d], seed) for c in cases for d in dtypes}
    oracles = {key: oracle(c, *inputs[key]) for c in cases for d in dtypes
               for key in [(c.id, d)]}
    rows: list[OpRow] = []
    meta: dict = {"host": platform.node(), "torch": torch.__version__, "backends": {}}
    for name in usable:
        t0 = time.perf_counter()
        with using_backend(name, policy) as b:
            import phyx.ops as ops

            meta["backends"][name] = {
                "emulated": b.emulated, "devices": b.describe_devices(),
                "versions": b.versions(), "precision_flags": b.precision_flags(),
                "kernels": ops.chosen_kernels(),
                "hardware": b.hardware_info()}
            device = torch_device()   # this rank's current device, never device 0
            for c in cases:
                kernel = ops.chosen_kernel(c.op).name
                for d in dtypes:
                    rows += _rows_for(c, d, name, b.emulated, kernel, inputs[(c.id, d)],
                                      oracles[(c.id, d)], device)
        meta["backends"][name]["seconds"] = round(time.perf_counter() - t0, 3)
        if progress:
            progress(name)
    _fill_ratios(rows, usable[0] if usable else None)
    return OpReport(rows, usable, skipped, policy, seed, dtypes, meta)


def _rows_for(case, dname, backend, emulated, kernel, inputs, expected, device) -> list[OpRow]:
    base = dict(op=case.op, case=case.name, backend=backend, emulated=emulated, dtype=dname,
                kernel=kernel)
    try:
        got = _run_case(case, *inputs, device)
    except UnsupportedArgumentError as e:
        return [OpRow(output=o, status=REFUSED, reason=str(e).splitlines()[0][:300], **base)
                for o in case.outputs]
    except Exception as e:  # a kernel crash is a failure of the backend, reported per row
        return [OpRow(output=o, status=ERROR, reason=f"{type(e).__name__}: {e}"[:300], **base)
                for o in case.outputs]
    thr = M.threshold_for(DTYPES[dname], case.tol_scale)
    rows = []
    for oname, g, e in zip(case.outputs, got, expected):
        m = M.compare(g, e)
        status, reason = M.verdict(m, thr)
        rows.append(OpRow(output=oname, status=status, reason=reason, metrics=m.as_dict(), **base))
    if len(got) != len(case.outputs):
        rows.append(OpRow(output="arity", status=M.FAIL,
                          reason=f"returned {len(got)} outputs, expected {len(case.outputs)}", **base))
    return rows


def _fill_ratios(rows: list[OpRow], baseline: str | None) -> None:
    if baseline is None:
        return
    base = {(r.op, r.case, r.output, r.dtype): r for r in rows if r.backend == baseline}
    for r in rows:
        b = base.get((r.op, r.case, r.output, r.dtype))
        if r.metrics is None or b is None or b.metrics is None:
            continue
        floor = M.ratio_floor(DTYPES[r.dtype])
        r.ratio_vs_baseline = M.error_ratio(r.metrics["rel_l2"], b.metrics["rel_l2"], floor)
        thr = M.threshold_for(DTYPES[r.dtype])
        if (r.status == M.PASS and r.ratio_vs_baseline > M.RATIO_WARN
                and r.metrics["rel_l2"] > 0.1 * thr.rel_l2):
            r.status = M.WARN
            r.reason = f"error {r.ratio_vs_baseline:.1f}x the {baseline} error vs the float64 oracle"


# --- output ----------------------------------------------------------------------------------
def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def format_table(report: OpReport, only_problems: bool = False) -> str:
    hdr = (f"{'op':<15}{'case':<23}{'out':<4}{'backend':<25}{'dtype':<6}{'kernel':<22}"
           f"{'max_abs':>10}{'rel_l2':>10}{'cosine':>12}{'ratio':>8}  verdict")
    lines = [hdr, "-" * len(hdr)]
    for r in report.rows:
        if only_problems and r.status == M.PASS:
            continue
        m = r.metrics or {}
        ratio = r.ratio_vs_baseline
        lines.append(
            f"{r.op:<15}{r.case:<23}{r.output:<4}{label(r.backend):<25}{r.dtype:<6}{r.kernel[:21]:<22}"
            f"{_fmt(m.get('max_abs'), '10.2e')}{_fmt(m.get('rel_l2'), '10.2e')}"
            f"{_fmt(m.get('cosine'), '12.8f')}{_fmt(ratio, '8.2f')}  {r.status}"
            + (f"  ({r.reason})" if r.reason and r.status != M.PASS else ""))
    return "\n".join(lines)


def format_summary(report: OpReport) -> str:
    out = [f"policy={report.policy} seed={report.seed} dtypes={','.join(report.dtypes)} "
           f"oracle=phyx.ops.reference in float64 on the CPU; ratio = rel_l2 / rel_l2 of "
           f"{report.backends[0] if report.backends else '-'}"]
    for b in report.backends:
        rs = [r for r in report.rows if r.backend == b]
        counts = {s: sum(r.status == s for r in rs) for s in (M.PASS, M.WARN, M.FAIL, REFUSED, ERROR)}
        worst = {}
        for r in rs:
            if r.metrics:
                worst[r.dtype] = max(worst.get(r.dtype, 0.0), r.metrics["rel_l2"])
        out.append(f"  {label(b):<25} " + "  ".join(f"{k}={v}" for k, v in counts.items())
                   + "   worst rel_l2: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items())
                   + f"   ({report.meta['backends'][b]['seconds']}s)")
    for b in report.backends:
        if is_emulated(b):
            out.append(f"  NOTE {b}: {EMULATED_NOTE}; its rows are never NPU results.")
    for b, why in report.skipped.items():
        out.append(f"  SKIPPED {b}: {why}")
    out.append("VERDICT: " + ("FAIL" if report.failed else "PASS"))
    return "\n".join(out)


def write_json(report: OpReport, path: str) -> None:
    from phyx.io.atomic import write_text_atomic as atomic_write_text

    atomic_write_text(path, json.dumps(report.to_dict(), indent=1, default=str))
