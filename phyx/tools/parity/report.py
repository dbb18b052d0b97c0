"""Reports: markdown and HTML with PNG plots (per-layer error, loss and gradient-norm curves).
matplotlib runs headless (Agg). Emulated sides are labelled EMULATED in every report, title and
table, and are never counted as NPU results."""
from __future__ import annotations

import os

from phyx.io.atomic import write_bytes_atomic as atomic_write_bytes
from phyx.io.atomic import write_text_atomic as atomic_write_text
from phyx.tools.parity import metrics as M
from phyx.tools.parity.compare import METRIC_COLUMNS, CompareReport, _output_text


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
    styles = [("o", "-"), ("x", "--"), ("s", ":"), ("^", "-.")]
    for i, (label, ys) in enumerate(curves.items()):  # markers + dashes: equal curves stay visible
        marker, line = styles[i % len(styles)]
        ax.plot(range(len(ys)), ys, marker=marker, linestyle=line, label=label)
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
    heads = ["#", "layer", "evidence", *(c.header for c in METRIC_COLUMNS), "verdict"]
    out += ["", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in rep.rows:
        out.append(f"| {r.idx} | `{r.name}` | {r.evidence} | " + " | ".join(r.cells())
                   + f" | {'**' + r.status + '**' if r.status == M.FAIL else r.status} |")
    for k, o in rep.outputs.items():
        out += ["", f"End-to-end `{k}`: {_output_text(o)}"]
    if rep.replay_errors:
        out += ["", "Replay errors (layers B could not replay):", ""]
        out += [f"- `{n}`: {e}" for n, e in rep.replay_errors.items()]
    if rep.reasons:
        out += ["", "Not PASS because: " + "; ".join(rep.reasons)]
    return "\n".join(out) + "\n"




# --- HTML ------------------------------------------------------------------------------------
_CSS = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px}td.num{text-align:right;"
        "font-family:monospace}tr.FAIL{background:#fdd}tr.SKIP{background:#eee}"
        ".emu{background:#fff3cd;border:1px solid #e0b000;padding:6px 10px;font-weight:bold}")


def _html_page(title: str, body: list[str]) -> str:
    import html

    return ("<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>" + html.escape(title)
            + f"</title><style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _emulated_banner(labels: list[str]) -> str:
    import html

    return (f"<p class='emu'>EMULATED: {html.escape(', '.join(labels))} ran the NPU backend's code "
            "path on the CPU against an emulation of torch_npu. It proves the translation, never "
            "NPU numerics; it is not an NPU result.</p>")


def compare_html(rep: CompareReport, plot: str | None = None) -> str:
    import html

    e = html.escape
    body = [f"<h1>Parity: {e(rep.b['label'])} vs {e(rep.a['label'])}</h1>"]
    if rep.emulated:
        body.append(_emulated_banner([s["label"] for s in (rep.a, rep.b) if s.get("emulated")]))
    body.append("<ul>" + "".join(f"<li>{x}</li>" for x in [
        f"verdict: <b>{e(rep.verdict)}</b>", f"dtype: {e(rep.dtype)}",
        "first divergence: " + (f"<b>{e(rep.first_divergence)}</b> ({e(str(rep.first_divergence_evidence))})"
                                if rep.first_divergence else "none"),
        f"A: {e(rep.a['label'])}, policy {e(str(rep.a.get('policy')))}, devices {e(str(rep.a.get('devices')))}",
        f"B: {e(rep.b['label'])}, policy {e(str(rep.b.get('policy')))}, devices {e(str(rep.b.get('devices')))}",
        *[f"note: {e(n)}" for n in rep.notes]]) + "</ul>")
    if plot:
        body.append(f"<img src='{e(os.path.basename(plot))}' alt='per-layer error'>")
    body.append("<table><tr><th>#</th><th>layer</th><th>evidence</th>"
                + "".join(f"<th>{e(c.header)}</th>" for c in METRIC_COLUMNS)
                + "<th>verdict</th><th>reason</th></tr>")
    for r in rep.rows:
        mark = " &larr; first divergence" if r.name == rep.first_divergence else ""
        body.append(f"<tr class='{r.status}'><td class='num'>{r.idx}</td><td><code>{e(r.name)}</code>"
                    f"{mark}</td><td>{r.evidence}</td>"
                    + "".join(f"<td class='num'>{t}</td>" for t in r.cells())
                    + f"<td>{r.status}</td><td>{e(r.reason)}</td></tr>")
    body.append("</table>")
    for k, o in rep.outputs.items():
        body.append(f"<p>End-to-end <code>{e(k)}</code>: {e(_output_text(o))}</p>")
    if rep.replay_errors:
        body.append("<p>Replay errors (layers B could not replay):</p><ul>" + "".join(
            f"<li><code>{e(n)}</code>: {e(str(m))}</li>" for n, m in rep.replay_errors.items()) + "</ul>")
    if rep.reasons:
        body.append(f"<p><b>Not PASS because:</b> {e('; '.join(rep.reasons))}</p>")
    return _html_page(f"parity {rep.b['label']} vs {rep.a['label']}", body)


def write_compare_report(rep: CompareReport, directory: str) -> str:
    """report.md + report.html + layer_error.png in `directory`; returns the markdown path."""
    os.makedirs(directory, exist_ok=True)
    plot = plot_layer_errors(rep, os.path.join(directory, "layer_error.png"))
    path = os.path.join(directory, "report.md")
    atomic_write_text(path, compare_markdown(rep, plot))
    atomic_write_text(os.path.join(directory, "report.html"), compare_html(rep, plot))
    return path


# --- loss parity ------------------------------------------------------------------------------
def loss_markdown(model: str, results, plots: dict) -> str:
    out = [f"# Loss parity: {model}", ""]
    emulated = sorted({c.label for r in results for c in (r.a, r.b) if c.emulated})
    if emulated:
        out.append(f"- **EMULATED**: {', '.join(emulated)} proves the NPU translation on the CPU; "
                   f"never an NPU result.")
    for r in results:
        out += [f"- {r.b.label} vs {r.a.label} ({r.a.dtype}, {len(r.a.loss)} steps): "
                f"**{r.verdict}**; loss windows (mean rel err) "
                + ", ".join(f"{w:.2e}" for w in r.loss_windows) + "; grad-norm windows "
                + ", ".join(f"{w:.2e}" for w in r.grad_norm_windows) + f" (limit {r.limit:.0%}); "
                f"step-0 gradients {sum(g['status'] != M.FAIL for g in r.grads.values())}/"
                f"{len(r.grads)} within threshold"]
    for what, p in plots.items():
        out += ["", f"![{what}]({os.path.basename(p)})"]
    if results:
        out += ["", "| step | " + " | ".join([results[0].a.label] + [r.b.label for r in results]) + " |",
                "|---|" + "---|" * (1 + len(results))]
        for i, x in enumerate(results[0].a.loss):
            out.append(f"| {i} | {x:.6f} | " + " | ".join(f"{r.b.loss[i]:.6f}" for r in results) + " |")
    return "\n".join(out) + "\n"


def loss_html(model: str, results, plots: dict) -> str:
    import html

    e = html.escape
    body = [f"<h1>Loss parity: {e(model)}</h1>"]
    emulated = sorted({c.label for r in results for c in (r.a, r.b) if c.emulated})
    if emulated:
        body.append(_emulated_banner(emulated))
    body.append("<ul>" + "".join(
        f"<li>{e(r.b.label)} vs {e(r.a.label)} ({e(r.a.dtype)}): <b>{r.verdict}</b>; loss windows "
        + ", ".join(f"{w:.2e}" for w in r.loss_windows) + "; grad-norm windows "
        + ", ".join(f"{w:.2e}" for w in r.grad_norm_windows) + f" (limit {r.limit:.0%})</li>"
        for r in results) + "</ul>")
    for what, p in plots.items():
        body.append(f"<img src='{e(os.path.basename(p))}' alt='{e(what)}'>")
    return _html_page(f"loss parity {model}", body)


def write_loss_report(model: str, curves, results, directory: str) -> str:
    """loss.png, grad_norm.png, loss_report.md / .html and loss_parity.json in `directory`."""
    import json

    os.makedirs(directory, exist_ok=True)
    plots = {"loss": plot_loss_curves({c.label: c.loss for c in curves},
                                      os.path.join(directory, "loss.png"), f"{model}: loss"),
             "gradient norm": plot_loss_curves({c.label: c.grad_norm for c in curves},
                                               os.path.join(directory, "grad_norm.png"),
                                               f"{model}: gradient norm")}
    md = os.path.join(directory, "loss_report.md")
    atomic_write_text(md, loss_markdown(model, results, plots))
    atomic_write_text(os.path.join(directory, "loss_report.html"), loss_html(model, results, plots))
    atomic_write_text(os.path.join(directory, "loss_parity.json"),
                      json.dumps({"model": model, "results": [r.to_dict() for r in results]},
                                 indent=1, default=str))
    return md
