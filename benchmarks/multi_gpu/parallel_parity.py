"""Multi-GPU parity and scaling: each parallel layout (tp, Ulysses sp, ring, USP, cfg, hybrids) against the
single-device output of the same seeded weights and inputs, with time per step and efficiency.

    torchrun --nproc_per_node 2 benchmarks/multi_gpu/parallel_parity.py \\
        --model wan-14b --res 720p --layers 8 --modes tp,sp,cfg,hybrid --out $OUT/wan14b_720p.json
    python benchmarks/multi_gpu/parallel_parity.py --model wan-1.3b --res 480p   # 1 device: t1 only

Per run: the backend comes from phyx (cuda + nccl on GPUs, cpu + gloo on the CPU); every rank
builds the single-device reference model and times one conditional step and one guided step
(cond and uncond batched); then, per layout, every rank builds its part of the model (TP slices
only) and runs the step that layout parallelises (guided for cfg layouts, cond otherwise).
Each rank compares its output with its own reference (relative L2, cosine, max abs), so the check
is per rank and needs no transfer; the digests of the outputs show all ranks hold the same tensor.
Time per step: warm-up, then the median over steps of the slowest rank (ranks start each step
together after a barrier; device synchronised before and after). Efficiency = t1 / (N * tN).
The JSON is rewritten atomically after every layout, so a run cut short keeps what it measured.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import os
import statistics
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mg_comm_count  # noqa: E402
import mg_init  # noqa: E402
import mg_layouts  # noqa: E402
import mg_models  # noqa: E402
import torch  # noqa: E402

import phyx  # noqa: E402
from phyx import comm  # noqa: E402
from phyx import device as pdev  # noqa: E402
from phyx.errors import LayoutError, ParallelConfigError  # noqa: E402

SCHEMA = "phyx.multi_gpu_parity/1"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Errors a layout raises at build time, identically on every rank: the layout is skipped.
CONFIG_ERRORS = (ParallelConfigError, LayoutError)


class ModeSkipped(Exception):
    pass


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, choices=sorted(mg_models.SPECS))
    p.add_argument("--res", default="480p", choices=mg_models.RESOLUTIONS)
    p.add_argument("--latent", default=None, help="override the latent grid: FxHxW (e.g. 3x6x10)")
    p.add_argument("--modes", default="tp,sp,cfg,hybrid",
                   help="comma list: tp, sp, ring, usp, cfg, hybrid, all, or layouts like cfg2xsp2, sp4xtp2, sp2xring2")
    p.add_argument("--layers", type=int, default=None,
                   help="cap the number of transformer blocks (the first blocks of the full model)")
    p.add_argument("--text-len", type=int, default=None, help="text tokens (default: the model's, 512)")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                   help="weights dtype (auto: bf16 on an accelerator, fp32 on the CPU)")
    p.add_argument("--backend", default=None, help="phyx backend (default: PHYX_BACKEND or autodetect)")
    p.add_argument("--policy", default="fast", choices=["fast", "reference"],
                   help="phyx kernel policy (reference = plain torch attention: small shapes only)")
    p.add_argument("--tf32", action="store_true", help="allow TF32/HF32 matmuls (off by default: parity)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--tol-scale", type=float, default=1.0,
                   help="loosen the dtype's parity threshold (phyx.tools.parity.metrics) by this factor")
    p.add_argument("--fp32-floor", action="store_true",
                   help="also run the single-device model in fp32 once and report how far the "
                        "low-precision reference is from it (the dtype's own error, for scale)")
    p.add_argument("--dist-timeout", type=float, default=None,
                   help="seconds before a collective fails (default: PHYX_DIST_TIMEOUT_S or phyx's 300)")
    p.add_argument("--out", default=None, help="JSON result path (written atomically)")
    p.add_argument("--estimate", type=int, default=None, metavar="N",
                   help="print the expected wall time of this run on N GPUs and exit (no device used)")
    a = p.parse_args(argv)
    if a.warmup < 0 or a.iters < 1:
        p.error("--warmup must be >= 0 and --iters >= 1")
    if a.layers is not None and a.layers < 1:
        p.error("--layers must be >= 1")
    if a.latent:
        try:
            a.latent = tuple(int(v) for v in a.latent.lower().split("x"))
            assert len(a.latent) == 3 and min(a.latent) > 0
        except (ValueError, AssertionError):
            p.error(f"--latent must be FxHxW with positive integers, got {a.latent!r}")
    a.modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    return a


# --- distributed helpers -----------------------------------------------------------------------
def launched_distributed() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def gather_floats(values, device) -> list[list[float]]:
    """Every rank's list of floats (same length on every rank), in rank order."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    return comm.all_gather(t[None], dim=0).cpu().tolist()


def free(device) -> None:
    gc.collect()
    pdev.empty_cache()
    pdev.synchronize()


def timed_steps(fn, warmup: int, iters: int):
    """(last output, seconds per timed step). Ranks start each timed step together."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(iters):
        comm.barrier()
        pdev.synchronize()
        t0 = time.perf_counter()
        out = fn()
        pdev.synchronize()
        times.append(time.perf_counter() - t0)
    return out, times


# --- one measurement ---------------------------------------------------------------------------
def step_summary(times_per_rank: list[list[float]]) -> dict:
    """Median over steps of the slowest rank's time, in ms."""
    per_step = [max(r[i] for r in times_per_rank) for i in range(len(times_per_rank[0]))]
    return {"ms": 1e3 * statistics.median(per_step), "step_ms": [1e3 * t for t in per_step],
            "per_rank_ms": [1e3 * statistics.median(r) for r in times_per_rank]}


def parity(out, ref, dtype, tol_scale, device) -> dict:
    from phyx.tools.parity.metrics import compare, threshold_for, verdict

    m = compare(out, ref)
    thr = threshold_for(dtype, tol_scale)
    v, _ = verdict(m, thr)
    rows = gather_floats([m.rel_l2, m.cosine, m.max_abs, m.max_abs_norm, m.nan + m.inf,
                          1.0 if v == "PASS" else 0.0], device)
    worst = max(range(len(rows)), key=lambda i: rows[i][0])
    return {"rel_l2": max(r[0] for r in rows), "cosine": min(r[1] for r in rows),
            "max_abs": max(r[2] for r in rows), "max_abs_norm": max(r[3] for r in rows),
            "nonfinite": int(sum(r[4] for r in rows)),
            "verdict": "PASS" if all(r[5] == 1.0 for r in rows) else "FAIL",
            "worst_rank": worst, "why": _why(rows[worst], thr),
            "threshold": {"rel_l2": thr.rel_l2, "max_abs_norm": thr.max_abs_norm, "cosine": thr.cosine},
            "per_rank": [{"rel_l2": r[0], "cosine": r[1], "max_abs": r[2]} for r in rows]}


def _why(row, thr) -> str:
    rel, cos, _, man, nonfinite, _ = row
    bad = [f"rel_l2 {rel:.2e} > {thr.rel_l2:.1e}"] if rel > thr.rel_l2 else []
    bad += [f"max_abs/max|ref| {man:.2e} > {thr.max_abs_norm:.1e}"] if man > thr.max_abs_norm else []
    bad += [f"cosine {cos:.8f} < {thr.cosine:.8f}"] if cos < thr.cosine else []
    bad += [f"{int(nonfinite)} non-finite values"] if nonfinite else []
    return "; ".join(bad)


def run_estimate(spec, world, modes, args, dtype, device_type) -> dict:
    import mg_estimate

    return mg_estimate.estimate(spec, world, modes, dtype="fp32" if dtype == torch.float32 else "bf16",
                                warmup=args.warmup, iters=args.iters, params=mg_estimate.param_count(spec),
                                device=device_type, fp32_floor=args.fp32_floor)


def print_estimate(args) -> int:
    """--estimate N: the expected wall time on N devices, from FLOPs (mg_estimate), no device."""
    spec = mg_models.make_spec(args.model, args.res, layers=args.layers, latent=args.latent,
                               text_len=args.text_len, guidance=args.guidance)
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    e = run_estimate(spec, args.estimate, mg_layouts.plan(args.modes, args.estimate), args, dtype,
                     "cpu" if args.backend == "cpu" else "cuda")
    modes = ", ".join(f"{k} {v:.0f}s" for k, v in e["modes_s"].items())
    print(f"estimate {args.model} {args.res} layers {spec.layers}/{spec.full_layers} on {args.estimate} "
          f"device(s): ~{e['total_s']:.0f} s (reference {e['reference_s']:.0f} s; {modes or 'no modes'}; "
          f"builds {e['builds_s']:.0f} s; t1 cond {e['step_s_single_device']['cond']:.2f} s)", flush=True)
    return 0


def fp32_floor(spec, refs, ref_info, args, device, rng_device, inputs) -> None:
    """The low-precision reference against the same model in fp32 (TF32 as set): the error the
    dtype itself makes, the scale against which a parallel layout's error is read."""
    from phyx.tools.parity.metrics import compare

    model = spec.build(torch.float32, device, args.seed, rng_device)
    with torch.no_grad():
        for b, ref in refs.items():
            m = compare(ref, spec.step(model, inputs, b).float())
            ref_info[b]["vs_fp32"] = {"rel_l2": m.rel_l2, "cosine": m.cosine, "max_abs": m.max_abs}
    del model
    free(device)


# --- the run -----------------------------------------------------------------------------------
def machine(world: int, device) -> dict:
    from phyx.tools.bench.env import machine_meta

    meta = machine_meta()
    names = phyx.get_backend().describe_devices()
    idx = device.index if device.index is not None else 0
    meta["devices"] = names
    meta["rank0_device_name"] = names[idx] if idx < len(names) else meta["device"]
    meta["world_size"] = world
    return meta


def write(result: dict, path: str | None) -> None:
    if path and comm.rank() == 0:
        from phyx.tools.bench.env import write_json

        write_json(result, path)


def run(args) -> dict:
    """The whole measurement in this process (one rank of the run). The kernel policy and TF32
    setting it switches are restored afterwards, so a caller's process is left as it was
    (--backend, when given, stays selected)."""
    if args.backend:
        phyx.set_backend(args.backend, args.policy)
    backend = phyx.get_backend()
    prev_policy, prev_tf32 = phyx.get_policy(), any(backend.precision_flags().values())
    phyx.set_policy(args.policy)
    backend.set_reduced_precision_matmul(args.tf32)
    try:
        return _run(args, backend)
    finally:
        phyx.set_policy(prev_policy)
        backend.set_reduced_precision_matmul(prev_tf32)


def _run(args, backend) -> dict:
    t_start = time.perf_counter()
    if launched_distributed():
        comm.init_distributed(timeout_s=args.dist_timeout)
    world = comm.world_size()
    device = pdev.torch_device()
    dtype = DTYPES[args.dtype] if args.dtype != "auto" else (
        torch.float32 if device.type == "cpu" else torch.bfloat16)

    result = {"schema": SCHEMA, "status": "running",
              "date": datetime.date.today().isoformat(),
              "argv": sys.argv[1:], "world_size": world, "backend": backend.name,
              "dist_backend": backend.dist_backend if world > 1 else None,
              "policy": args.policy, "tf32": args.tf32, "dtype": str(dtype).replace("torch.", ""),
              "seed": args.seed, "guidance": args.guidance, "warmup": args.warmup, "iters": args.iters,
              "machine": machine(world, device)}
    try:
        spec = mg_models.make_spec(args.model, args.res, layers=args.layers, latent=args.latent,
                                   text_len=args.text_len, guidance=args.guidance)
    except mg_models.ModelUnavailable as e:
        result.update(status="skipped", reason=str(e), model={"name": args.model})
        write(result, args.out)
        return result
    result["model"] = spec.describe()
    result["shape"] = {**spec.shape(), "res": args.res}
    modes = mg_layouts.plan(args.modes, world)
    result["estimate"] = run_estimate(spec, world, modes, args, dtype, device.type)
    write(result, args.out)

    try:
        return _measure_all(args, result, spec, modes, world, device, dtype, t_start)
    except Exception as e:
        if result["status"] == "running":   # a failure outside a layout (the reference, a build)
            result.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(),
                          elapsed_s=time.perf_counter() - t_start)
            write(result, args.out)
        raise


def _measure_all(args, result, spec, modes, world, device, dtype, t_start) -> dict:
    use_dev_rng, why = mg_init.device_rng_consistent(device) if device.type != "cpu" else (False, "cpu")
    rng_device = device if use_dev_rng else torch.device("cpu")
    result["weights"] = {"init": "seeded per parameter (mg_init)", "drawn_on": str(rng_device.type),
                         "why": why}
    inputs = spec.to_device(spec.make_inputs(args.seed), device)
    # one device: both t1s (the baselines of every layout); else what the layouts compare with
    need_guided = any(m.guided and m.skip is None for m in modes) or world == 1
    need_cond = any(not m.guided and m.skip is None for m in modes) or not need_guided or world == 1

    # single-device reference on every rank (no parallel state: phyx.parallel is trivial)
    from phyx.parallel import ParallelConfig, init_parallel, reset_parallel_state

    reset_parallel_state()
    refs, ref_info = {}, {}
    branches = [b for b, need in (("cond", need_cond), ("guided", need_guided)) if need]
    model = None
    for b in branches:
        pdev.reset_peak_memory_stats()
        if model is None:
            model = spec.build(dtype, device, args.seed, rng_device)
            result["model"]["params"] = sum(p.numel() for p in model.parameters())
        with torch.no_grad():
            out, times = timed_steps(lambda: spec.step(model, inputs, b), args.warmup, args.iters)  # noqa: F821
        pdev.synchronize()
        refs[b] = out.float()
        digests = mg_init.digests_across_ranks(refs[b], device)
        ref_info[b] = {**step_summary(gather_floats(times, device)),
                       "peak_mem_bytes": max(r[0] for r in gather_floats([pdev.max_memory_allocated()], device)),
                       "identical_across_ranks": len(set(digests)) == 1}
    if need_cond and need_guided:
        # Noise floor of the guided reference: the same math as two batch-1 forwards combined
        # (what cfg-parallel ranks compute) against the batched forward.
        from phyx.tools.parity.metrics import compare
        with torch.no_grad():
            unc = spec.step(model, inputs, "uncond").float()
        m = compare(spec.combine(refs["cond"], unc), refs["guided"])
        ref_info["guided"]["noise_floor_two_forwards"] = {"rel_l2": m.rel_l2, "cosine": m.cosine,
                                                          "max_abs": m.max_abs}
        del unc
    del model
    free(device)
    if args.fp32_floor and dtype != torch.float32:
        fp32_floor(spec, refs, ref_info, args, device, rng_device, inputs)
    result["reference"] = ref_info
    write(result, args.out)

    rows = []
    result["modes"] = rows
    for mode in modes:
        row = {"mode": mode.label, "layout": mode.layout_dict if mode.layout else None,
               "step": "guided" if mode.guided else "cond"}
        rows.append(row)
        if mode.skip:
            row.update(status="skipped", reason=mode.skip)
            continue
        model = out = None
        try:
            init_parallel(ParallelConfig(**mode.config_kwargs))
            try:
                pdev.reset_peak_memory_stats()
                model = spec.build(dtype, device, args.seed, rng_device)
            except CONFIG_ERRORS as e:
                raise ModeSkipped(f"{type(e).__name__}: {e}") from e
            if mode.layout[2] > 1 and not mg_init.has_tp_shards(model):
                raise ModeSkipped(f"{spec.family} has no tensor-parallel layers (its weights would be "
                                  f"replicated, not split)")
            local_params = sum(p.numel() for p in model.parameters())
            with torch.no_grad(), mg_comm_count.count_collectives() as counts:
                out, times = timed_steps(lambda: spec.step(model, inputs, row["step"]), args.warmup, args.iters)  # noqa: F821
            pdev.synchronize()
            row["collectives_per_step"] = mg_comm_count.per_step(counts, args.warmup + args.iters)
            row["params_rank0"] = local_params
            peak = gather_floats([pdev.max_memory_allocated()], device)
            out = out.float()
            digests = mg_init.digests_across_ranks(out, device)
            summary = step_summary(gather_floats(times, device))
            t1 = ref_info[row["step"]]["ms"]
            par = parity(out, refs[row["step"]], dtype, args.tol_scale, device)
            floor = ref_info[row["step"]].get("vs_fp32")
            if floor and floor["rel_l2"] > 0:
                par["rel_l2_over_fp32_floor"] = par["rel_l2"] / floor["rel_l2"]
            row.update(status="ok", parity=par,
                       outputs_identical_across_ranks=len(set(digests)) == 1, **summary,
                       speedup=t1 / summary["ms"], efficiency=t1 / (world * summary["ms"]),
                       peak_mem_bytes=int(max(r[0] for r in peak)),
                       peak_mem_per_rank=[int(r[0]) for r in peak])
        except ModeSkipped as e:
            row.update(status="skipped", reason=str(e))
        except Exception as e:
            # A failure on one rank leaves the others in a collective: record it and stop (the
            # dist timeout ends the other ranks); the layouts measured so far are in the JSON.
            row.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
            result.update(status="failed", elapsed_s=time.perf_counter() - t_start)
            write(result, args.out)
            raise
        finally:
            reset_parallel_state()
            del model, out
            free(device)
        write(result, args.out)
    result.update(status="complete", elapsed_s=time.perf_counter() - t_start)
    write(result, args.out)
    return result


def format_table(result: dict) -> str:
    if result.get("status") == "skipped":
        return f"{result['model']['name']}: skipped: {result['reason']}"
    m, s = result["model"], result["shape"]
    lines = [f"{m['name']} layers {m['layers']}/{m['full_layers']} {s['res']} latent {s['latent']} "
             f"seq {s['seq_len']} text {s['text_len']} | {result['dtype']} | world {result['world_size']} "
             f"| {result['machine'].get('rank0_device_name')}"]
    for b, r in result.get("reference", {}).items():
        nf = r.get("noise_floor_two_forwards")
        lines.append(f"  t1 {b:6s} {r['ms']:10.2f} ms  peak {r['peak_mem_bytes'] / 2**30:6.2f} GiB"
                     + (f"  noise floor rel_l2 {nf['rel_l2']:.2e}" if nf else "")
                     + (f"  vs fp32 rel_l2 {r['vs_fp32']['rel_l2']:.2e}" if "vs_fp32" in r else ""))
    lines.append(f"  {'mode':14s} {'step':6s} {'ms':>10s} {'speedup':>8s} {'eff':>6s} {'rel_l2':>9s} "
                 f"{'cosine':>10s} {'max_abs':>9s} {'GiB':>6s} {'commMB':>8s}  verdict")
    for r in result.get("modes", []):
        if r["status"] != "ok":
            lines.append(f"  {r['mode']:14s} {r['step']:6s} {r['status']}: {r.get('reason') or r.get('error')}")
            continue
        p = r["parity"]
        lines.append(f"  {r['mode']:14s} {r['step']:6s} {r['ms']:10.2f} {r['speedup']:8.2f} "
                     f"{100 * r['efficiency']:5.1f}% {p['rel_l2']:9.2e} {p['cosine']:10.7f} "
                     f"{p['max_abs']:9.2e} {r['peak_mem_bytes'] / 2**30:6.2f} "
                     f"{sum(c['bytes'] for c in r['collectives_per_step'].values()) / 2**20:8.2f}  {p['verdict']}"
                     + ("" if r["outputs_identical_across_ranks"] else "  (ranks differ!)"))
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.estimate:
        return print_estimate(args)
    try:
        result = run(args)
        if comm.rank() == 0:
            print(format_table(result), flush=True)
            if args.out:
                print(f"wrote {args.out}", flush=True)
        ok = all(r["status"] != "failed" and r.get("parity", {}).get("verdict", "PASS") == "PASS"
                 for r in result.get("modes", []))
        return 0 if ok else 1
    finally:
        comm.destroy()


if __name__ == "__main__":
    sys.exit(main())
