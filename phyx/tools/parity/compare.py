"""Compare two recorded runs layer by layer and find the first diverging layer.

Evidence, strongest first:
- replay ('local'): B's layer outputs computed from A's recorded inputs (teacher forcing per
  layer), so each layer is judged on its own error, not on drift accumulated upstream;
- oracle: the same layer replayed in float64 on the CPU on A's inputs gives each side's own error
  and their ratio (which side is wrong);
- accumulated: B's own forward against A's; reported always, used for the verdict only when no
  replay is available (then the first divergence is labelled 'accumulated').
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Callable

import torch

from phyx.tools.parity import metrics as M
from phyx.tools.parity.artifact import NotComparableError, RunData
from phyx.tools.parity.capture import NotReplayable, call_recorded, flatten_outputs, unpack

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
          "fp64": torch.float64, "float64": torch.float64}
FLOOR_FACTOR = 10.0  # a layer may differ by up to 10x its measured noise floor


# --- replay -----------------------------------------------------------------------------------
def replay(model: torch.nn.Module, source: RunData, device, cast: torch.dtype | None = None,
           only: set[str] | None = None, probes=None) -> tuple[dict, dict]:
    """Run each recorded layer of `source` again on `model` (this backend) from its recorded
    inputs. Returns ({layer: {key: output on CPU}}, {layer: error message}).

    `source` is data, never code: a record is replayed only as a submodule of `model`, a phyx op,
    or a method / function probe that `probes` (this side's ModelSpec: its `layers` patterns and
    `functions`) declares. Anything else the artifact names is refused per layer, not called."""
    from phyx.ops import OP_NAMES, call_kernel

    allowed_fns = set((getattr(probes, "functions", None) or {}).values())
    method_patterns = [p for p in (getattr(probes, "layers", None) or ()) if isinstance(p, str) and ":" in p]

    def conv(t):
        if cast is not None and t.is_floating_point():
            t = t.to(cast)
        return t.to(device)

    def conv_host(t):
        return t.to(cast) if cast is not None and t.is_floating_point() else t

    outs, errors = {}, {}
    with torch.no_grad():
        for L in source.layers:
            if only is not None and L["name"] not in only:
                continue
            tensors = source.input_tensors(L)
            if L.get("inputs") is None or (not tensors and _needs_tensors(L["inputs"])):
                errors[L["name"]] = "inputs not recorded (stats mode)"
                continue
            try:
                # host-side function probes (RoPE / time-embedding builders) keep their tensor
                # inputs on the host; device arguments always become this backend's device
                cv = conv_host if L["kind"] == "fn" else conv
                args = unpack(L["inputs"]["args"], tensors, cv, device, cast)
                kwargs = unpack(L["inputs"]["kwargs"], tensors, cv, device, cast)
                with _autocast_as_recorded(L, device, cast):
                    if L["kind"] == "op":
                        op = L["target"][3:]
                        if not L["target"].startswith("op:") or op not in OP_NAMES:
                            raise NotReplayable(f"{L['target'][:80]!r} is not a phyx op; not called")
                        result = call_kernel(op, *args)
                    else:
                        result = call_recorded(model, L, args, kwargs, functions=allowed_fns,
                                               methods=method_patterns)
            except NotReplayable as e:
                errors[L["name"]] = str(e)
                continue
            except Exception as e:  # report per layer; one broken layer must not hide the rest
                errors[L["name"]] = f"{type(e).__name__}: {e}"[:300]
                continue
            outs[L["name"]] = {k: t.detach().to("cpu") for k, t in flatten_outputs(result)}
    return outs, errors


def _autocast_as_recorded(layer: dict, device, cast):
    """Re-enter the autocast region the layer was recorded in (its inputs are mixed-precision
    and its weights are not). A float64 oracle replay runs without it."""
    ac = layer.get("autocast")
    if not ac or cast == torch.float64:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=getattr(torch, ac["dtype"]))


def _needs_tensors(struct) -> bool:
    return '"t"' in str(struct).replace("'", '"')


# --- report -----------------------------------------------------------------------------------
@dataclass
class LayerRow:
    idx: int
    name: str
    kind: str
    status: str                  # PASS | FAIL | SKIP
    evidence: str                # 'replay' | 'accumulated' | 'stats'
    reason: str = ""
    accumulated: dict = field(default_factory=dict)   # key -> metrics dict
    local: dict = field(default_factory=dict)         # key -> metrics dict
    oracle: dict = field(default_factory=dict)        # key -> {err_a, err_b, ratio, worse}
    limit_rel_l2: float | None = None

    def worst(self, which: str = "auto", metric: str = "rel_l2") -> float | None:
        src = self.local if (which == "local" or (which == "auto" and self.local)) else self.accumulated
        vals = [m[metric] for m in src.values() if m and metric in m]
        return max(vals) if vals else None

    def summary(self) -> tuple[float | None, ...]:
        """The value of every METRIC_COLUMNS column for this row (None: nothing to show)."""
        return tuple(c.value(self) for c in METRIC_COLUMNS)

    def cells(self) -> list[str]:
        """The METRIC_COLUMNS values formatted ('-' where there is nothing to show)."""
        return [c.text(self) for c in METRIC_COLUMNS]


@dataclass(frozen=True)
class MetricColumn:
    """One per-layer metric column, shown the same way by the text table, the markdown and the
    HTML report: adding a metric to the reports is one line in METRIC_COLUMNS."""
    header: str
    value: Callable[[LayerRow], float | None]
    spec: str             # format spec of the value
    width: int            # text-table width

    def text(self, row: LayerRow) -> str:
        v = self.value(row)
        return "-" if v is None else format(v, self.spec)


def _min_cosine(r: LayerRow) -> float | None:
    cos = [m["cosine"] for m in (r.local or r.accumulated).values() if m and "cosine" in m]
    return min(cos) if cos else None


METRIC_COLUMNS = (
    MetricColumn("local rel_l2", lambda r: r.worst("local") if r.local else None, ".2e", 13),
    MetricColumn("accumulated rel_l2", lambda r: r.worst("accumulated"), ".2e", 19),
    MetricColumn("min cosine", _min_cosine, ".9f", 13),
    MetricColumn("oracle B/A", lambda r: max((o["ratio_b_over_a"] for o in r.oracle.values()), default=None),
                 ".2f", 11),
)


@dataclass
class CompareReport:
    a: dict                      # {'backend','emulated','label','path'}
    b: dict
    dtype: str
    rows: list[LayerRow]
    first_divergence: str | None
    first_divergence_evidence: str | None
    outputs: dict                # key -> metrics + drift
    comparability: list[str]
    verdict: str
    notes: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)        # why the verdict is not PASS
    replay_errors: dict = field(default_factory=dict)       # layer -> why B could not replay it

    @property
    def failed(self) -> bool:
        return self.verdict == M.FAIL

    @property
    def emulated(self) -> bool:
        return bool(self.a.get("emulated") or self.b.get("emulated"))

    @property
    def npu_result(self) -> bool:
        """True only when a real NPU run took part; an emulated side is never an NPU result."""
        from phyx.backend import accelerator_of

        return any(accelerator_of(s.get("backend"), bool(s.get("emulated"))) == "npu" for s in (self.a, self.b))

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {**asdict(self), "emulated": self.emulated, "npu_result": self.npu_result}


def _as_json(x):
    return json.loads(json.dumps(x, default=str))


def comparability_problems(a: RunData, b: RunData) -> list[str]:
    """Same model, config, seed, dtype, inputs and layer shapes, or the comparison is meaningless."""
    p = []
    ra, rb = a.manifest.get("run", {}), b.manifest.get("run", {})
    for key in ("model", "config", "seed", "dtype"):
        if _as_json(ra.get(key)) != _as_json(rb.get(key)):   # a live run's tuples == stored lists
            p.append(f"run.{key} differs: {ra.get(key)!r} vs {rb.get(key)!r}")
    ia, ib = a.manifest.get("inputs", {}), b.manifest.get("inputs", {})
    if set(ia) != set(ib):
        p.append(f"input names differ: {sorted(ia)} vs {sorted(ib)}")
    for k in sorted(set(ia) & set(ib)):
        if ia[k]["shape"] != ib[k]["shape"]:
            p.append(f"input {k} shape {ia[k]['shape']} vs {ib[k]['shape']}")
        elif ia[k]["sha256"] != ib[k]["sha256"]:
            p.append(f"input {k} differs (sha256): the runs did not use the same inputs; draw them "
                     f"on the CPU from the seed (phyx.tools.parity.inputs) or reuse the recorded ones")
    la = {L["name"]: L for L in a.layers}
    lb = {L["name"]: L for L in b.layers}
    missing = [n for n in la if n not in lb]
    extra = [n for n in lb if n not in la]
    if missing or extra:
        p.append(f"layers differ: only in A {missing[:5]}, only in B {extra[:5]}")
    for n in la.keys() & lb.keys():
        if la[n]["shapes"] != lb[n]["shapes"]:
            p.append(f"layer {n} shapes differ: {la[n]['shapes']} vs {lb[n]['shapes']}")
    return p


def _side(run: RunData) -> dict:
    env = run.manifest.get("environment", {})
    return {"backend": env.get("backend"), "emulated": bool(env.get("emulated")),
            "label": run.backend_label, "path": run.path, "policy": env.get("policy"),
            "devices": env.get("devices"), "kernels": env.get("kernels")}


def _metrics_on(a_t, b_t, a_stats, b_stats):
    if a_t is not None and b_t is not None:
        return M.compare(b_t, a_t).as_dict(), "full"
    if a_stats and b_stats and "sample" in a_stats and "sample" in b_stats:
        m = M.compare(torch.tensor(b_stats["sample"], dtype=torch.float64),
                      torch.tensor(a_stats["sample"], dtype=torch.float64)).as_dict()
        m["l2_rel_diff"] = abs(b_stats["l2"] - a_stats["l2"]) / max(abs(a_stats["l2"]), 1e-30)
        return m, "stats"
    return None, None


def compare_runs(a: RunData, b: RunData, *, oracle: dict | None = None,
                 noise_floor: dict | None = None, allow_incomparable: bool = False,
                 dtype: str | None = None) -> CompareReport:
    """Compare run B against run A (A is the reference side). `oracle`: {layer: {key: float64
    output on A's inputs}}; `noise_floor`: {layer: rel_l2 measured between two runs/kernels of one
    backend}."""
    problems = comparability_problems(a, b)
    if problems and not allow_incomparable:
        raise NotComparableError("runs are not comparable:\n  - " + "\n  - ".join(problems))
    dname = dtype or a.manifest.get("run", {}).get("dtype", "fp32")
    base_thr = M.threshold_for(DTYPES.get(dname, torch.float32))
    has_replay = bool(a.manifest.get("run_id")) and (
        (b.manifest.get("replay_of") or {}).get("run_id") == a.manifest.get("run_id"))
    notes = []
    if not has_replay:
        notes.append("no replay of A's layer inputs on B: verdict and first divergence use "
                     "accumulated drift (record B with --replay-from A for per-layer localisation)")
    lb = {L["name"]: L for L in b.layers}
    replay_errors = b.manifest.get("replay_errors") or {}
    rows = []
    for L in a.layers:
        name = L["name"]
        if name not in lb:
            continue
        thr = base_thr
        if noise_floor and noise_floor.get(name):
            scale = max(1.0, FLOOR_FACTOR * noise_floor[name] / base_thr.rel_l2)
            thr = M.threshold_for(DTYPES.get(dname, torch.float32), scale)
        row = LayerRow(L["idx"], name, L["kind"], M.PASS, "accumulated", limit_rel_l2=thr.rel_l2)
        bad = []
        for key in L["outputs"]:
            m, how = _metrics_on(a.output(L, key), b.output(lb[name], key),
                                 L.get("stats", {}).get(key), lb[name].get("stats", {}).get(key))
            if m is not None:
                row.accumulated[key] = m
                if how == "stats":
                    row.evidence = "stats"
            if has_replay:
                r = b.replay_output(L, key)
                ref = a.output(L, key)
                if r is not None and ref is not None:
                    row.local[key] = M.compare(r, ref).as_dict()
            if oracle and name in oracle and key in oracle[name]:
                o = oracle[name][key]
                ea = M.compare(a.output(L, key), o).rel_l2 if a.output(L, key) is not None else None
                rb = b.replay_output(L, key) if has_replay else None
                eb = M.compare(rb, o).rel_l2 if rb is not None else None
                if ea is not None and eb is not None:
                    ratio = M.error_ratio(eb, ea, M.ratio_floor(DTYPES.get(dname, torch.float32)))
                    row.oracle[key] = {"err_a": ea, "err_b": eb, "ratio_b_over_a": ratio,
                                       "worse": "B" if eb > ea else "A"}
        evidence = row.local if has_replay and row.local else row.accumulated
        if has_replay and row.local:
            row.evidence = "replay"
        elif has_replay and not row.local and L["outputs"]:
            why = replay_errors.get(name, "no replay output recorded")
            row.status, row.reason = "SKIP", f"not replayed: {why}"[:400]
            rows.append(row)
            continue
        if not evidence and L["outputs"]:
            def held(run, layer, key):
                return run.output(layer, key) is not None or key in (layer.get("stats") or {})
            one_sided = [k for k in L["outputs"] if held(a, L, k) != held(b, lb[name], k)]
            row.status = "SKIP"
            row.reason = (f"outputs {one_sided[:3]} recorded on one side only" if one_sided
                          else "not captured on either side")
            rows.append(row)
            continue
        for key, m in evidence.items():
            mm = M.Metrics(**{k: v for k, v in m.items() if k in M.Metrics.__dataclass_fields__})
            st, why = M.verdict(mm, thr)
            if st == M.FAIL:
                bad.append(f"{key}: {why}")
        if bad:
            row.status, row.reason = M.FAIL, "; ".join(bad)[:400]
            worse = {o["worse"] for o in row.oracle.values()}
            if worse:
                row.reason += f"  [float64 oracle: {'/'.join(sorted(worse))} is off]"
        rows.append(row)
    rows.sort(key=lambda r: r.idx)
    first = next((r for r in rows if r.status == M.FAIL), None)
    reasons = [f"first divergence at {first.name}"] if first is not None else []
    # the end-to-end output is part of the verdict, with the same dtype-aware threshold
    outputs = {}
    for k in sorted(set(a.manifest.get("outputs", {})) | set(b.manifest.get("outputs", {}))):
        ta, tb = a.tensors.get(f"outputs/{k}"), b.tensors.get(f"outputs/{k}")
        if ta is None or tb is None:
            reasons.append(f"end-to-end output {k!r} missing in {'A' if ta is None else 'B'}")
            continue
        m = M.compare(tb, ta)
        st, why = M.verdict(m, base_thr)
        o = {**m.as_dict(), "status": st, "reason": why, "limit_rel_l2": base_thr.rel_l2}
        if m.shape_match and ta.numel():
            o["drift"] = M.drift_metrics(tb, ta)
        outputs[k] = o
        if st == M.FAIL:
            reasons.append(f"end-to-end output {k!r}: {why}")
    replay_errors = dict(b.manifest.get("replay_errors") or {}) if has_replay else {}
    unreplayed = [r.name for r in rows if r.status == "SKIP" and r.reason.startswith("not replayed")]
    if unreplayed:
        reasons.append(f"{len(unreplayed)} layer(s) not replayed on B ({', '.join(unreplayed[:3])}"
                       f"{', ...' if len(unreplayed) > 3 else ''}); a layer not compared cannot pass")
    missing = [r.name for r in rows if r.status == "SKIP" and "one side only" in r.reason]
    if missing:
        reasons.append(f"{len(missing)} layer(s) with outputs recorded on one side only "
                       f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    compared = sum(1 for r in rows if r.status != "SKIP" and (r.local or r.accumulated)) + len(outputs)
    if compared == 0:
        reasons.append("nothing was compared: no layer and no end-to-end output is present on both "
                       "sides (empty or mismatched artifacts)")
    verdict = M.FAIL if reasons else M.PASS
    for side in (a, b):
        if side.emulated:
            notes.append(f"{side.backend_label}: emulated run; proves the translation, never an "
                         f"NPU result")
    return CompareReport(_side(a), _side(b), dname, rows, first.name if first else None,
                         first.evidence if first else None, outputs, problems, verdict, notes,
                         reasons, replay_errors)


def format_compare(rep: CompareReport, max_rows: int | None = None) -> str:
    lines = ([f"EMULATED: {', '.join(s['label'] for s in (rep.a, rep.b) if s.get('emulated'))} "
              f"proves the NPU translation on the CPU; not an NPU result"] if rep.emulated else [])
    lines += [f"A: {rep.a['label']}  ({rep.a.get('path') or 'live'})",
             f"B: {rep.b['label']}  ({rep.b.get('path') or 'live'})",
             f"dtype {rep.dtype}; per-layer error = "
             + ("B replayed on A's inputs vs A (local)" if any(r.local for r in rep.rows)
                else "B's own run vs A (accumulated)")]
    hdr = (f"{'#':>3} {'layer':<40}{'evidence':<12}"
           + "".join(f"{c.header:>{c.width}}" for c in METRIC_COLUMNS) + "  verdict")
    lines += [hdr, "-" * len(hdr)]
    rows = rep.rows if max_rows is None else rep.rows[:max_rows]
    for r in rows:
        mark = "  <-- first divergence" if r.name == rep.first_divergence else ""
        lines.append(f"{r.idx:>3} {r.name[:39]:<40}{r.evidence:<12}"
                     + "".join(f"{t:>{c.width}}" for c, t in zip(METRIC_COLUMNS, r.cells()))
                     + f"  {r.status}{mark}"
                     + (f"\n      {r.reason}" if r.status in (M.FAIL, "SKIP") else ""))
    for k, o in rep.outputs.items():
        lines.append(f"output {k}: " + _output_text(o))
    for name, err in list(rep.replay_errors.items())[:20]:
        lines.append(f"REPLAY ERROR {name}: {err}")
    if len(rep.replay_errors) > 20:
        lines.append(f"REPLAY ERROR ... and {len(rep.replay_errors) - 20} more")
    for n in rep.notes:
        lines.append(f"NOTE: {n}")
    if rep.first_divergence:
        lines.append(f"FIRST DIVERGENCE: {rep.first_divergence} ({rep.first_divergence_evidence})")
    lines.append(f"VERDICT: {rep.verdict}" + (f" ({'; '.join(rep.reasons)})" if rep.reasons else ""))
    return "\n".join(lines)


def _output_text(o: dict) -> str:
    """One line for an end-to-end output: error, drift (when shapes match) and its verdict."""
    d = o.get("drift")
    txt = f"rel_l2 {o['rel_l2']:.2e} (limit {o.get('limit_rel_l2', float('nan')):.0e})"
    if d:
        txt += f" cosine {d['cosine']:.9f} PSNR {d['psnr_db']:.1f} dB SSIM {d['ssim']:.6f}"
    return txt + f"  {o.get('status', '?')}" + (f": {o['reason']}" if o.get("reason") else "")
