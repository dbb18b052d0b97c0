"""Build one cross-machine table (e.g. GPU vs NPU) from JSON files that `phyx bench` wrote on
different machines: per op case, phyx's own call (what a user gets) on each machine with its
time, rate, peak memory and parity verdict, and the time ratio against the first file."""
from __future__ import annotations

from phyx.errors import InputError
from phyx.io import untrusted as U

# The record that stands for a machine in the cross-vendor table: the call users make.
_PHYX_KERNEL = {"attention": "phyx.ops.attention", "fused": "phyx.ops"}


def load(paths: list[str]) -> list[dict]:
    runs = []
    for p in paths:
        d = U.read_json(p, "benchmark result")
        if d.get("kind") not in ("phyx-bench-ops", "phyx-bench-models"):
            raise InputError(f"{p}: not a phyx bench result (kind={d.get('kind')!r}); "
                             f"write one with `phyx bench ops --out FILE`")
        d["_path"] = p
        runs.append(d)
    return runs


def machine_label(run: dict) -> str:
    m = run["meta"]
    tag = " (EMULATED)" if m.get("emulated") else ""
    return f"{m['backend']}{tag}: {m['device']} [{m['date']}]"


def _index(run: dict) -> dict:
    """(section, case) -> the phyx record of that case in this run."""
    out = {}
    for section, kernel in _PHYX_KERNEL.items():
        for r in run.get(section, []):
            if r.get("kernel") == kernel:
                out[(section, r["case"])] = r
    for r in run.get("models", []):
        out[("models", f"{r['case']}:{r.get('mode', '')}:{r.get('impl', 'phyx')}")] = r
    return out


def _cell(r: dict | None) -> str:
    if r is None:
        return "—"
    if "error" in r:
        return "error"
    rate = (f"{r['tflops']:.0f} TF/s" if "tflops" in r else
            f"{r['gbps']:.0f} GB/s" if "gbps" in r else
            f"MFU {r['mfu']:.0%}" if r.get("mfu") is not None else "")
    mem = r.get("peak_mem_mb")
    mem_s = f", {mem / 1024:.1f} GiB" if mem is not None else ""
    par = r.get("parity", {})
    par_s = f", {par.get('verdict')}" if isinstance(par, dict) and par.get("verdict") else ""
    return f"{r['ms']:.2f} ms ({rate}{mem_s}{par_s})"


def table(runs: list[dict]) -> str:
    idx = [_index(r) for r in runs]
    keys = []
    for i in idx:
        keys += [k for k in i if k not in keys]
    head = ["section", "case"] + [machine_label(r) for r in runs]
    if len(runs) > 1:
        head += [f"time ratio {i + 1}/1" for i in range(1, len(runs))]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in keys:
        recs = [i.get(key) for i in idx]
        row = [key[0], key[1]] + [_cell(r) for r in recs]
        base = recs[0]
        for r in recs[1:]:
            ok = base and r and "ms" in base and "ms" in r
            row.append(f"{r['ms'] / base['ms']:.2f}x" if ok else "—")
        lines.append("| " + " | ".join(row) + " |")
    notes = ["", "Machines:"]
    for n, r in enumerate(runs, 1):
        m = r["meta"]
        v = m.get("versions", {})
        host = {k: val for k, val in m.get("host", {}).get("settings", {}).items() if val is not None}
        notes.append(f"{n}. {machine_label(r)} — file {r['_path']}; policy {m.get('policy')}; "
                     f"torch {v.get('torch')}; " + ", ".join(
                         f"{k}={v[k]}" for k in ("cuda", "cann", "torch_npu", "triton") if k in v)
                     + (f"; host settings {host}" if host else "")
                     + ("; EMULATED: proves translation, not NPU numerics" if m.get("emulated") else ""))
        if r.get("peaks"):
            p = r["peaks"]
            notes.append(f"   measured ceilings: matmul {p['matmul_tflops']:.0f} TFLOP/s, copy "
                         f"{p['copy_gbps']:.0f} GB/s")
    return "\n".join(lines + notes) + "\n"
