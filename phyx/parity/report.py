"""Reports: markdown with PNG plots (per-layer error, loss curves). matplotlib runs headless (Agg).
Emulated sides are labelled in every title and table."""
from __future__ import annotations

import os

from phyx.parity import metrics as M
from phyx.parity._io import atomic_write_bytes, atomic_write_text
from phyx.parity.compare import CompareReport


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_layer_errors(rep: CompareReport, path: str) -> str:
    plt = _plt()
    rows = rep.rows
    x = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(rows)), 4))
    loc = [r.worst("local") if r.local else None for r in rows]
    acc = [r.worst("accumulated") for r in rows]
    tiny = 1e-18
    if any(v is not None for v in loc):
        ax.semilogy(x, [max(v or tiny, tiny) for v in loc], "o-", label="local (replay)")
    ax.semilogy(x, [max(v or tiny, tiny) for v in acc], "s--", label="accumulated", alpha=0.7)
    lim = [r.limit_rel_l2 or float("nan") for r in rows]
    ax.semilogy(x, lim, "k:", label="threshold")
    for i, r in enumerate(rows):
        if r.status == M.FAIL:
            ax.axvline(i, color="red", alpha=0.15)
    ax.set_xticks(x)
    ax.set_xticklabels([r.name for r in rows], rotation=75, fontsize=7)
    ax.set_ylabel("rel L2 error")
    ax.set_title(f"{rep.b['label']} vs {rep.a['label']} ({rep.dtype})")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_loss_curves(curves: dict[str, list[float]], path: str, title: str = "loss") -> str:
    """curves: label -> per-step values (labels should carry '(EMULATED)' where it applies)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, ys in curves.items():
        ax.plot(range(len(ys)), ys, label=label)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def compare_markdown(rep: CompareReport, plot: str | None = None) -> str:
    out = [f"# Parity: {rep.b['label']} vs {rep.a['label']}", "",
           f"- verdict: **{rep.verdict}**",
           f"- dtype: {rep.dtype}",
           f"- first divergence: {rep.first_divergence or 'none'}"
           + (f" ({rep.first_divergence_evidence})" if rep.first_divergence else ""),
           f"- A: {rep.a['label']}, policy {rep.a.get('policy')}, devices {rep.a.get('devices')}",
           f"- B: {rep.b['label']}, policy {rep.b.get('policy')}, devices {rep.b.get('devices')}"]
    if rep.a.get("emulated") or rep.b.get("emulated"):
        out.append("- **EMULATED**: an emulated side proves the NPU translation on the CPU; it is "
                   "never an NPU result.")
    for n in rep.notes:
        out.append(f"- note: {n}")
    if plot:
        out += ["", f"![per-layer error]({os.path.basename(plot)})"]
    out += ["", "| # | layer | evidence | local rel_l2 | accumulated rel_l2 | min cosine | oracle B/A | verdict |",
            "|---|---|---|---|---|---|---|---|"]
    for r in rep.rows:
        loc = r.worst("local") if r.local else None
        acc = r.worst("accumulated")
        cos = [m["cosine"] for m in (r.local or r.accumulated).values()]
        ratio = max((o["ratio_b_over_a"] for o in r.oracle.values()), default=None)
        out.append(f"| {r.idx} | `{r.name}` | {r.evidence} | {'-' if loc is None else f'{loc:.2e}'} | "
                   f"{'-' if acc is None else f'{acc:.2e}'} | "
                   f"{'-' if not cos else f'{min(cos):.9f}'} | {'-' if ratio is None else f'{ratio:.2f}'} | "
                   f"{'**' + r.status + '**' if r.status == M.FAIL else r.status} |")
    for k, o in rep.outputs.items():
        d = o["drift"]
        out += ["", f"End-to-end `{k}`: rel_l2 {o['rel_l2']:.2e}, cosine {d['cosine']:.9f}, "
                    f"PSNR {d['psnr_db']:.1f} dB, SSIM {d['ssim']:.6f}"]
    return "\n".join(out) + "\n"


def write_compare_report(rep: CompareReport, directory: str) -> str:
    os.makedirs(directory, exist_ok=True)
    plot = plot_layer_errors(rep, os.path.join(directory, "layer_error.png"))
    path = os.path.join(directory, "report.md")
    atomic_write_text(path, compare_markdown(rep, plot))
    return path
