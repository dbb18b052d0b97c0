"""The certificate's report: certificate.json and certificate.md, each written atomically."""
from __future__ import annotations

import json
import os

from phyx.io.atomic import write_text_atomic
from phyx.tools.certify.verdict import Check

SECTIONS = (("ops", "(a) Op parity matrix"), ("facts", "(b) Hardware facts"),
            ("models", "(c) Tiny-model parity against shipped GPU artifacts"),
            ("loss", "(d) Loss-parity window"))
EMULATED_BANNER = ("**EMULATED** -- backend npu-emulated: the NPU backend's code path against a CPU "
                   "emulation of torch_npu. This proves the translation and rehearses the certificate; "
                   "it is not an NPU result, and hardware facts stay UNSETTLED.")


def to_json(meta: dict, checks: list[Check], overall: dict) -> dict:
    return {"certificate": "phyx first NPU contact", "schema": 1, **meta, "overall": overall,
            "emulated": overall["emulated"], "npu_result": overall["npu_result"],
            "checks": [c.to_dict() for c in checks]}


def to_markdown(meta: dict, checks: list[Check], overall: dict) -> str:
    emu = overall["emulated"]
    tag = " (EMULATED)" if emu else ""
    out = [f"# phyx first-NPU-contact certificate{tag}", ""]
    if emu:
        out += [EMULATED_BANNER, ""]
    out += [f"**Overall: {overall['label']}**", "",
            f"- backend: {meta['backend']}{tag}", f"- SoC: {meta.get('soc', {}).get('soc', '?')}{tag}",
            f"- versions: {json.dumps(meta.get('versions', {}))}",
            f"- artifacts: {meta.get('artifacts', {}).get('path')} (recorded on "
            f"{meta.get('artifacts', {}).get('recorded_on')})",
            f"- reference set: {meta.get('artifacts', {}).get('note')}",
            f"- counts: {json.dumps(overall['counts'])}", ""]
    for key, title in SECTIONS:
        rows = [c for c in checks if c.section == key]
        out += [f"## {title}{tag}", "", "| check | verdict | fact | reason |", "|---|---|---|---|"]
        for c in rows:
            v = f"{c.verdict} (EMULATED)" if c.emulated else c.verdict
            out.append(f"| {c.name} | {v} | {_cell(c.fact)} | {_cell(c.reason)} |")
        out.append("")
    return "\n".join(out)


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def write(out_dir: str, meta: dict, checks: list[Check], overall: dict) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "certificate.json"),
             "markdown": os.path.join(out_dir, "certificate.md")}
    write_text_atomic(paths["json"], json.dumps(to_json(meta, checks, overall), indent=1, default=str))
    write_text_atomic(paths["markdown"], to_markdown(meta, checks, overall))
    return paths
