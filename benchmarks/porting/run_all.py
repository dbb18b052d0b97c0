"""Reproduce the porting table of docs/porting.md from fetched upstream checkouts.

    python benchmarks/porting/run_all.py CHECKOUTS_DIR [--out DIR]

CHECKOUTS_DIR holds HunyuanVideo/, LTX-Video/, Allegro/, Open-Sora/, mochi/ (commits in
docs/porting.md).
Each driver runs in a fresh process per backend through `phyx port run`, as the guide says."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
# name: (driver, checkout subdir put on sys.path, extra port-run flags)
REPOS = {
    "HunyuanVideo": ("hunyuanvideo.py", "HunyuanVideo", []),
    "LTX-Video": ("ltx_video.py", "LTX-Video", ["--sdpa"]),
    "Allegro": ("allegro.py", "Allegro", ["--sdpa"]),
    "Open-Sora": ("open_sora.py", "Open-Sora", []),
    "Open-Sora (EmbedND RoPE)": ("open_sora_rope64.py", "Open-Sora", []),
    "mochi": ("mochi.py", "mochi/src", ["--autocast", "bf16"]),
}
BACKENDS = ("cpu", "npu-emulated")


def run_one(checkouts: Path, name: str, backend: str, out: Path | None) -> dict:
    driver, sub, flags = REPOS[name]
    cmd = [sys.executable, "-m", "phyx.cli", "port", "run", str(HERE / driver), "--path",
           str(checkouts / sub), "--backend", backend, "--json", *flags]
    if out is not None:
        cmd += ["--out", str(out / f"{name}-{backend}")]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(p.stdout)


def row(name: str, backend: str, r: dict) -> str:
    if "error" in r:
        return f"| {name} | {backend} | ERROR: {r['error']} | | | | |"
    o = r.get("output") or {}
    rel = f"{o['rel_l2']:.1e}" if o else f"not compared ({(r.get('parity_error') or '')[:60]})"
    calls = ", ".join(f"{k} x{v}" for k, v in r["phyx_calls"].items()) or "none"
    share = r["total"]["backend_flop_share"]
    traps = ", ".join(sorted({t["category"] for t in r["traps"]})) or "none"
    return (f"| {name} | {backend} | {calls} | {'-' if share is None else f'{100 * share:.1f}%'} | "
            f"{traps} | {rel} | {r['verdict']} |")


def scan_table(checkouts: Path) -> None:
    """Findings per repository (scope as labelled) with the labelled precision and recall."""
    from phyx.tools.porting import scan_paths

    labels = json.loads((HERE / "scan_labels.json").read_text())
    sub = {name: REPOS[name][1].split("/")[0] for name in REPOS if "(" not in name}
    print("| repo | scope | findings | false positives | false negatives | precision | recall |")
    print("|---|---|---|---|---|---|---|")
    for name, lab in labels.items():
        if name.startswith("_"):
            continue
        rep = scan_paths([checkouts / sub[name] / s for s in lab["scope"]])
        n, fp, fn = len(rep.findings), len(lab["false_positives"]), len(lab["false_negatives"])
        tp = n - fp
        prec = tp / n if n else 1.0
        rec = tp / (tp + fn) if tp + fn else 1.0
        print(f"| {name} | {', '.join(lab['scope'])} | {n} ({', '.join(f'{k} {v}' for k, v in rep.counts().items())}) "
              f"| {fp} | {fn} | {prec:.2f} | {rec:.2f} |")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkouts", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="also keep each port report there")
    ap.add_argument("--scan-only", action="store_true", help="only the scanner table")
    a = ap.parse_args()
    scan_table(a.checkouts)
    print()
    if a.scan_only:
        return 0
    print("| repo | backend | phyx op calls | FLOPs via phyx | run-time traps | fp32 rel L2 vs float64 | verdict |")
    print("|---|---|---|---|---|---|---|")
    for name in REPOS:
        for b in BACKENDS:
            print(row(name, b, run_one(a.checkouts, name, b, a.out)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
