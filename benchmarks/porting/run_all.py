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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkouts", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="also keep each port report there")
    a = ap.parse_args()
    print("| repo | backend | phyx op calls | FLOPs via phyx | run-time traps | fp32 rel L2 vs float64 | verdict |")
    print("|---|---|---|---|---|---|---|")
    for name in REPOS:
        for b in BACKENDS:
            print(row(name, b, run_one(a.checkouts, name, b, a.out)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
