"""PNG plots of benchmark result files: attention TFLOP/s per kernel, fused-op GB/s eager vs
phyx, model step time phyx vs diffusers, where a profiled model step's device time went (per
kernel category, `phyx bench models --breakdown`), and multi-GPU speed-up per layout. Reads the JSON that
`phyx bench ops`, `phyx bench models` and benchmarks/multi_gpu/ write; each plotting function
returns the numbers it drew, so tests can check them against the file."""
from __future__ import annotations

import math
from pathlib import Path

from phyx.errors import PhyxError
from phyx.io.atomic import atomic_path

DPI = 100  # small files: the PNGs are committed next to RESULTS.md
MODE_LABELS = {"forward": "forward", "train": "fwd+bwd"}
# phyx.tools.bench.profile.kernel_breakdown's categories, in drawing order; one fixed colour each so
# every bar of every breakdown plot reads the same (a category not listed here goes last, grey)
CATEGORY_COLOURS = {"attention": "tab:blue", "matmul": "tab:orange", "elementwise": "tab:green",
                    "copy/cast": "tab:red", "triton": "tab:purple", "norm": "tab:brown",
                    "reduction": "tab:pink", "other": "tab:gray"}


class NotAPhyxResultError(PhyxError, ValueError):
    """A JSON file that none of the benchmark tools wrote."""


# ------------------------------------------------------------------ reading
def load_result(path) -> tuple[str, dict]:
    """(kind, data) with kind 'ops', 'models' or 'multi_gpu', told from the file's contents."""
    expected = ("expected a `phyx bench ops` / `phyx bench models` result (kind 'phyx-bench-ops' / "
                "'phyx-bench-models') or a benchmarks/multi_gpu result (schema "
                "'phyx.multi_gpu_parity...')")
    from phyx.io import untrusted as U

    try:
        data = U.read_json(path, "benchmark result", NotAPhyxResultError, expect=None)
    except NotAPhyxResultError as e:
        raise NotAPhyxResultError(f"{e}; {expected}") from None
    if not isinstance(data, dict):
        raise NotAPhyxResultError(f"{path}: not a phyx result (a JSON {type(data).__name__}); {expected}")
    kind, schema = data.get("kind"), str(data.get("schema", ""))
    if kind == "phyx-bench-ops":
        return "ops", data
    if kind == "phyx-bench-models":
        return "models", data
    if schema.startswith("phyx.multi_gpu_parity.merged"):
        return "multi_gpu", data
    if schema.startswith("phyx.multi_gpu_parity"):  # one run of parallel_parity.py, not merged
        return "multi_gpu", {"schema": schema, "runs": {Path(path).stem: data}}
    raise NotAPhyxResultError(f"{path}: not a phyx result (kind={kind!r}, schema={schema or None!r}, "
                              f"keys {sorted(data)[:8]}); {expected}")


def _machine_line(meta: dict, count: int | None = None) -> str:
    device = meta.get("device", "unknown device")
    if count and count > 1:
        device = f"{count} x {device}"
    backend = meta.get("backend", "?")
    tag = "" if str(meta.get("device", "")).startswith(backend) else f" ({backend})"
    if meta.get("emulated"):
        tag = f" ({backend}, EMULATED)"
    return f"{device}{tag}, {meta.get('date', 'undated')}"


def _title(what: str, result: dict) -> str:
    quick = " [--quick: tiny shapes]" if result.get("quick") else ""
    return f"{what}{quick}\n{_machine_line(result.get('meta', {}))}"


def _layers_note(result: dict) -> str:
    """', first 4 blocks' for a models run cut to its first blocks (--layers), else ''."""
    layers = result.get("layers")
    if layers is None:
        return ""
    return f", first {layers} block{'s' if layers != 1 else ''}"


# ------------------------------------------------------------------ drawing
def _figure(width=10.0, height=4.5):
    # The Agg canvas directly, not pyplot: no global backend switch, no window, no figure leak.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, pil_kwargs={"optimize": True})
    return path


def _grouped_bars(ax, groups: list[str], series: dict[str, dict[str, float]]):
    """One cluster of bars per group, one bar per series; missing values leave a gap."""
    n = max(len(series), 1)
    width = 0.8 / n
    bars = {}
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        ys = [values.get(g, math.nan) for g in groups]
        bars[name] = ax.bar(xs, ys, width, label=name)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=8)
    return bars


def _ok(rec: dict, key: str) -> bool:
    return "error" not in rec and isinstance(rec.get(key), (int, float))


# ------------------------------------------------------------------ the plots
def plot_attention(result: dict, path) -> dict | None:
    """TFLOP/s per case per kernel, the run's measured matmul peak as a line."""
    recs = [r for r in result.get("attention", []) if _ok(r, "tflops")]
    if not recs:
        return None
    cases = list(dict.fromkeys(r["case"] for r in recs))
    tflops: dict[str, dict[str, float]] = {}
    for r in recs:
        tflops.setdefault(r["kernel"], {})[r["case"]] = r["tflops"]
    peaks = result.get("peaks") or {}
    fig = _figure(11, 6)
    ax = fig.add_subplot()
    _grouped_bars(ax, cases, tflops)
    if "matmul_tflops" in peaks:
        dtype = str(peaks.get("matmul_dtype", "")).replace("torch.", "")
        ax.axhline(peaks["matmul_tflops"], color="black", ls="--", lw=1,
                   label=f"measured {dtype} matmul peak, {peaks['matmul_tflops']:.0f} TFLOP/s")
    ax.set_ylabel("TFLOP/s")
    ax.set_xticklabels(cases, fontsize=8, rotation=10, ha="right")
    # many kernels: the legend goes below the axes so the bars keep the full width
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    ax.set_title(_title("Attention forward: TFLOP/s per kernel", result), fontsize=10)
    _save(fig, path)
    return {"tflops": tflops, "matmul_peak_tflops": peaks.get("matmul_tflops")}


def plot_fused(result: dict, path) -> dict | None:
    """GB/s of eager torch against phyx.ops (the kernel users get: Triton on CUDA under
    policy 'fast'), the run's measured copy bandwidth as a line."""
    recs = [r for r in result.get("fused", []) if r.get("kernel") in ("eager", "phyx.ops") and _ok(r, "gbps")]
    if not recs:
        return None
    kernels = result.get("meta", {}).get("kernels", {})
    policy = result.get("meta", {}).get("policy", "?")
    cases = list(dict.fromkeys(r["case"] for r in recs))
    gbps = {"eager": {}, "phyx.ops": {}}
    for r in recs:
        gbps[r["kernel"]][r["case"]] = r["gbps"]
    ops_of = {r["case"]: r.get("op") for r in recs}
    labels = [f"{c}\n[{kernels.get(ops_of[c], '?')}]" for c in cases]  # which kernel phyx.ops chose
    fig = _figure(10, 4.5)
    ax = fig.add_subplot()
    series = {"eager torch": gbps["eager"], f"phyx.ops (policy {policy})": gbps["phyx.ops"]}
    _grouped_bars(ax, cases, series)
    ax.set_xticklabels(labels, fontsize=7)
    copy = (result.get("peaks") or {}).get("copy_gbps")
    if copy:
        ax.axhline(copy, color="black", ls="--", lw=1, label=f"measured copy bandwidth, {copy:.0f} GB/s")
    ax.set_ylabel("GB/s (bytes read + written)")
    ax.legend(fontsize=8)
    ax.set_title(_title("Fused ops: GB/s, eager vs phyx.ops", result), fontsize=10)
    _save(fig, path)
    return {"gbps": gbps, "copy_gbps": copy}


def plot_models(result: dict, path) -> dict | None:
    """ms per step, phyx vs diffusers, one panel per mode, phyx's speed-up written on its bar."""
    recs = [r for r in result.get("models", []) if _ok(r, "ms")]
    if not recs:
        return None
    modes = [m for m in dict.fromkeys(r["mode"] for r in recs)]
    ms: dict[str, dict[str, dict[str, float]]] = {}  # mode -> impl -> case -> ms
    for r in recs:
        ms.setdefault(r["mode"], {}).setdefault(r.get("impl", "phyx"), {})[r["case"]] = r["ms"]
    fig = _figure(max(5.0 * len(modes), 7.0), 4.5)  # one panel: still room for the title
    speedups: dict[str, dict[str, float]] = {}
    for i, mode in enumerate(modes):
        ax = fig.add_subplot(1, len(modes), i + 1)
        by_impl = ms[mode]
        cases = list(dict.fromkeys(c for impl in by_impl.values() for c in impl))
        bars = _grouped_bars(ax, cases, {k: by_impl[k] for k in ("phyx", "diffusers") if k in by_impl})
        ax.set_xticklabels(cases, fontsize=7, rotation=15, ha="right")
        speedups[mode] = {}
        for j, case in enumerate(cases):
            p, d = by_impl.get("phyx", {}).get(case), by_impl.get("diffusers", {}).get(case)
            if p and d:
                speedups[mode][case] = d / p  # > 1: phyx is faster
                bar = bars["phyx"][j]
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{d / p:.2f}x",
                        ha="center", va="bottom", fontsize=8)
        ax.set_ylabel("ms per step")
        ax.set_title(MODE_LABELS.get(mode, mode), fontsize=9)
        ax.legend(fontsize=8)
    compiled = ", torch.compile" if result.get("compiled") else ""
    if result.get("peer_attention", "native") != "native":
        compiled += f", diffusers on {result['peer_attention']}"
    fig.suptitle(_title(f"Model step time, phyx vs diffusers{compiled}{_layers_note(result)} "
                        "(label: phyx speed-up)", result), fontsize=10)
    _save(fig, path)
    return {"ms": ms, "speedup_vs_diffusers": speedups}


def plot_breakdown(result: dict, path) -> dict | None:
    """Where a profiled step's device time went: for each (case, mode) a panel of horizontal
    stacked bars, one per implementation, ms per kernel category (same colour per category in
    every bar), the profile's total at the bar's end."""
    recs = [r for r in result.get("models", []) if "error" not in r
            and isinstance(r.get("breakdown"), dict)
            and isinstance(r["breakdown"].get("ms_per_category"), dict)]
    if not recs:
        return None
    # case -> mode -> impl -> {category: ms}, and the same nesting for the totals
    ms: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    total: dict[str, dict[str, dict[str, float]]] = {}
    for r in recs:
        b, impl = r["breakdown"], r.get("impl", "phyx")
        ms.setdefault(r["case"], {}).setdefault(r["mode"], {})[impl] = dict(b["ms_per_category"])
        total.setdefault(r["case"], {}).setdefault(r["mode"], {})[impl] = b.get(
            "total_ms", sum(b["ms_per_category"].values()))
    seen = list(dict.fromkeys(c for r in recs for c in r["breakdown"]["ms_per_category"]))
    categories = [c for c in CATEGORY_COLOURS if c in seen] + [c for c in seen if c not in CATEGORY_COLOURS]
    panels = [(case, mode) for case in ms for mode in ms[case]]
    sources = sorted({str(r["breakdown"].get("source", "?")) for r in recs})

    fig = _figure(10, 1.0 + 1.5 * len(panels))
    order = ("phyx", "diffusers")
    for i, (case, mode) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        by_impl = ms[case][mode]
        impls = [k for k in order if k in by_impl] + [k for k in by_impl if k not in order]
        ys = list(range(len(impls)))[::-1]  # first impl (phyx) on top
        left = [0.0] * len(impls)
        for cat in categories:
            widths = [by_impl[k].get(cat, 0.0) for k in impls]
            ax.barh(ys, widths, 0.6, left=left, color=CATEGORY_COLOURS.get(cat, "lightgray"),
                    label=cat if i == 0 else None)
            left = [a + w for a, w in zip(left, widths)]
        for y, k, end in zip(ys, impls, left):
            ax.text(end, y, f" {total[case][mode][k]:.1f} ms", va="center", ha="left", fontsize=8)
        ax.set_yticks(ys)
        ax.set_yticklabels(impls, fontsize=8)
        ax.set_xlim(0, max(left) * 1.15)  # room for the total at the bar end
        ax.set_xlabel("device ms per step", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_title(f"{case}, {MODE_LABELS.get(mode, mode)}", fontsize=9)
    fig.legend(*fig.axes[0].get_legend_handles_labels(), fontsize=8, ncol=len(categories),
               loc="lower center", bbox_to_anchor=(0.5, 0.0), frameon=False)
    fig.suptitle(_title(f"Device time per kernel category ({', '.join(sources)}){_layers_note(result)}",
                        result), fontsize=10)
    fig.tight_layout(rect=(0, 0.06 if len(panels) > 1 else 0.1, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, pil_kwargs={"optimize": True})
    return {"ms_per_category": ms, "total_ms": total, "categories": categories}


def _run_label(run: dict) -> str:
    model, shape = run.get("model", {}), run.get("shape", {})
    label = f"{model.get('name', '?')} {shape.get('res', '')}".strip()
    if run.get("dtype") and run["dtype"] != "bfloat16":
        label += f", {run['dtype'].replace('float32', 'fp32')}"
    if model.get("layers") and model.get("full_layers") and model["layers"] < model["full_layers"]:
        label += f"\n{model['layers']}/{model['full_layers']} blocks"
    return label


def plot_multi_gpu(result: dict, path) -> dict | None:
    """Speed-up over one GPU per layout per model, against the ideal (the GPU count)."""
    speedup: dict[str, dict[str, float]] = {}  # layout -> run label -> speed-up
    runs, worlds = [], set()
    labels = []
    for key, run in result.get("runs", {}).items():
        ok = [m for m in run.get("modes", []) if m.get("status") == "ok" and _ok(m, "speedup")]
        if not ok:  # unreadable, skipped, single-device or failed runs have nothing to show
            continue
        label = _run_label(run)
        if label in labels:  # two runs of the same model and shape: keep both bars apart
            label += f" [{key}]"
        labels.append(label)
        runs.append(run)
        worlds.add(run.get("world_size"))
        for m in ok:
            speedup.setdefault(m["mode"], {})[label] = m["speedup"]
    if not runs:
        return None
    fig = _figure(max(6.0, 1.6 * len(labels) + 2), 4.5)
    ax = fig.add_subplot()
    _grouped_bars(ax, labels, speedup)
    for n in sorted(w for w in worlds if w):
        ax.axhline(n, color="black", ls="--", lw=1, label=f"ideal: {n} GPUs")
    ax.set_ylabel("speed-up over 1 GPU")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    machine = runs[0].get("machine", {})
    meta = {**machine, "date": runs[0].get("date", machine.get("date"))}
    ax.set_title(f"Multi-GPU speed-up per layout (median step of the slowest rank)\n"
                 f"{_machine_line(meta, max(w for w in worlds if w))}", fontsize=10)
    _save(fig, path)
    return {"speedup": speedup, "gpus": sorted(worlds)}


PLOTS = {"ops": (("attention", plot_attention), ("fused", plot_fused)),
         "models": (("models", plot_models), ("breakdown", plot_breakdown)),
         "multi_gpu": (("multi-gpu", plot_multi_gpu),)}


def plot_file(path, out_dir) -> dict[Path, dict]:
    """Every plot the file has data for, into out_dir as <file stem>-<section>.png;
    {png path: the numbers drawn}. Sections missing from the file are skipped."""
    kind, result = load_result(path)
    stem = Path(path).stem
    written = {}
    for section, plot in PLOTS[kind]:
        png = Path(out_dir) / f"{stem}-{section}.png"  # the stem keeps two runs' plots apart
        series = plot(result, png)
        if series is not None:
            written[png] = series
    return written


__all__ = ["load_result", "plot_file", "plot_attention", "plot_fused", "plot_models",
           "plot_breakdown", "plot_multi_gpu", "NotAPhyxResultError"]
