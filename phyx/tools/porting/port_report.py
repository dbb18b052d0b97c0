"""The port report: text / markdown, HTML and JSON for a PortRun, written atomically. A port
that routed nothing through the backend says so in its first line."""
from __future__ import annotations

import html
import json
from dataclasses import asdict
from pathlib import Path

from phyx.backend import accelerator_of
from phyx.tools.porting.port_run import PortRun


def headline(r: PortRun) -> str:
    label = f"{r.backend}{' (EMULATED)' if r.emulated else ''}"
    t = r.total
    if r.routed_nothing:
        return (f"NOTHING RAN THROUGH {label}: 0 phyx op calls; all {t['plain_calls']} aten ops "
                f"ran as plain torch, so this run proves nothing about {r.backend}'s kernels")
    share = t["backend_flop_share"]
    calls = ", ".join(f"{op} x{n} ({r.kernels.get(op, '?')})" for op, n in sorted(r.phyx_calls.items()))
    return (f"{label}: {'-' if share is None else f'{100 * share:.1f}%'} of FLOPs through phyx ops "
            f"({calls}); {t['plain_calls']} aten op calls ran as plain torch")


def _fmt(x, spec=".2e"):
    return "-" if x is None else format(x, spec)


def verdict(r: PortRun) -> str:
    if r.routed_nothing:
        return "NOT PROVEN (nothing went through the backend)"
    if r.parity_error:
        return "NOT CHECKED (the float64 comparison could not run)"
    if r.output is None and not r.layers:
        return "NOT CHECKED (parity off)"
    return "FAIL" if r.failed else "PASS"


def to_markdown(r: PortRun) -> str:
    lines = [headline(r), "", f"# Port report: `{r.target}` on {r.backend}", ""]
    if r.emulated:
        lines += ["**EMULATED**: proves the NPU translation on the CPU, never NPU numerics.", ""]
    lines += [f"policy `{r.policy}`, dtype `{r.dtype}`, autocast `{r.autocast or 'off'}`, "
              f"shims {', '.join(r.shims)}", "",
              "## Ops per module", "",
              "| module | phyx op calls | aten ops via phyx | aten ops plain torch | FLOPs via phyx | top plain ops |",
              "|---|---|---|---|---|---|"]
    for name, m in r.modules.items():
        share = m["backend_flop_share"]
        phyx_ops = ", ".join(f"{k} x{v}" for k, v in m["phyx_ops"].items()) or "-"
        top = ", ".join(f"{k} x{v}" for k, v in list(m["top_plain_ops"].items())[:4]) or "-"
        lines.append(f"| `{name}` | {phyx_ops} | {m['backend_calls']} | {m['plain_calls']} | "
                     f"{'-' if share is None else f'{100 * share:.1f}%'} | {top} |")
    t = r.total
    share = t["backend_flop_share"]
    lines.append(f"| **total** | {sum(r.phyx_calls.values())} | {t['backend_calls']} | "
                 f"{t['plain_calls']} | {'-' if share is None else f'{100 * share:.1f}%'} | |")
    lines += ["", "## Traps hit at run time", ""]
    if not r.traps:
        lines.append("none")
    for t in r.traps:
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(t["ops"].items(), key=lambda kv: -kv[1])[:6])
        mods = ", ".join(f"`{m}`" for m in t["modules"][:4]) + (" ..." if len(t["modules"]) > 4 else "")
        lines.append(f"- **{t['category']}** at `{t['where']}` ({t['detail']}) in {mods}: {ops} "
                     f"-> {t['fix']}")
    lines += ["", "## Parity against a float64 run (CPU reference)", ""]
    if r.parity_error:
        lines += [f"not compared: {r.parity_error}", ""]
    if r.output is not None:
        o = r.output
        lines.append(f"output rel_l2 {o['rel_l2']:.2e} (limit {o['limit']:.0e}, judged as "
                     f"{o['judged_as']}): {'ok' if o['ok'] else 'FAIL'}")
        lines.append("")
    if r.layers:
        lines += ["| layer | rel_l2 (replayed on recorded inputs) | limit | verdict |",
                  "|---|---|---|---|"]
        for row in r.layers:
            v = "ok" if row["ok"] else f"FAIL {row['reason']}".strip()
            lines.append(f"| `{row['layer']}` | {_fmt(row['rel_l2'])} | {_fmt(row.get('limit'), '.0e')} | {v} |")
    for n in r.notes:
        lines += ["", f"NOTE: {n}"]
    lines += ["", f"VERDICT: {verdict(r)}"]
    return "\n".join(lines) + "\n"


def to_dict(r: PortRun) -> dict:
    d = asdict(r)
    d.update(headline=headline(r), verdict=verdict(r), routed_nothing=r.routed_nothing,
             npu_result=accelerator_of(r.backend, r.emulated) == "npu")
    return d


def to_html(r: PortRun) -> str:
    body = html.escape(to_markdown(r))
    color = "#b00" if r.routed_nothing or r.failed else "#070"
    return (f"<!doctype html><meta charset='utf-8'><title>phyx port report</title>"
            f"<h2 style='color:{color}'>{html.escape(headline(r))}</h2><pre>{body}</pre>\n")


def write(r: PortRun, out_dir) -> dict[str, Path]:
    from phyx.io.atomic import write_text_atomic

    out = Path(out_dir)
    paths = {"md": out / "port_report.md", "html": out / "port_report.html",
             "json": out / "port_report.json"}
    write_text_atomic(paths["md"], to_markdown(r))
    write_text_atomic(paths["html"], to_html(r))
    write_text_atomic(paths["json"], json.dumps(to_dict(r), indent=2, default=str) + "\n")
    return paths
