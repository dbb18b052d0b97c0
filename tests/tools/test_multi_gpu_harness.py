"""The multi-GPU parity and scaling harness (benchmarks/multi_gpu), proven on CPU gloo ranks:
a real torchrun launch of 2 ranks on a tiny Wan, a pool of 2 ranks for the other families and
for planted parallel bugs (which the harness must report as FAIL), and a 1-process run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from phyx.testing.multiproc import RankPool

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "benchmarks" / "multi_gpu"
SCRIPT = HARNESS / "parallel_parity.py"
sys.path.insert(0, str(HARNESS))

import mg_init  # noqa: E402
import mg_layouts  # noqa: E402

FP32_TOL = 1e-5


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}
    env.update(PHYX_BACKEND="cpu", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return env


def _modes(result):
    return {r["mode"]: r for r in result["modes"]}


# --- layouts and seeded weights (in process) ----------------------------------------------------
def test_layout_plan():
    plan = {m.label: m for m in mg_layouts.plan(["tp", "sp", "cfg", "hybrid"], 2)}
    assert plan["tp2"].layout == (1, 1, 2) and plan["sp2"].layout == (1, 2, 1)
    assert plan["cfg2"].layout == (2, 1, 1) and plan["cfg2"].guided and not plan["tp2"].guided
    assert "4 ranks" in plan["hybrid"].skip
    eight = [m.layout for m in mg_layouts.plan(["hybrid"], 8)]
    assert (2, 2, 2) in eight and (1, 4, 2) in eight and (2, 4, 1) in eight
    assert all(sum(n > 1 for n in lay) >= 2 and lay[0] * lay[1] * lay[2] == 8 for lay in eight)
    four = {m.label: m for m in mg_layouts.plan(["all", "cfg2xsp2", "sp8"], 4)}
    assert "world has 4" in four["cfg"].skip and "world has 4" in four["sp8"].skip
    assert four["cfg2xsp2"].layout == (2, 2, 1) and list(four).count("cfg2xsp2") == 1
    assert all(m.skip for m in mg_layouts.plan(["tp", "sp"], 1))
    with pytest.raises(ValueError, match="bad mode"):
        mg_layouts.plan(["tp2xtp2"], 4)
    with pytest.raises(ValueError, match="bad mode"):
        mg_layouts.plan(["pipeline"], 2)


def test_layout_plan_ring_and_usp():
    """The 2-GPU sequence layouts: Ulysses 2 ('sp2') and ring 2 ('ring2'); USP needs 4 ranks."""
    from phyx.parallel import ParallelConfig

    two = {m.label: m for m in mg_layouts.plan(["sp", "ring", "usp", "ring2", "ulysses2"], 2)}
    assert two["ring2"].layout == (1, 2, 1) and two["ring2"].ring == 2 and not two["ring2"].skip
    assert ParallelConfig(**two["ring2"].config_kwargs).sp_mode == "ring"
    assert ParallelConfig(**two["sp2"].config_kwargs).sp_mode == "ulysses" and list(two).count("sp2") == 1
    assert "at least 4 ranks" in two["usp"].skip
    four = {m.label: m for m in mg_layouts.plan(["usp", "sp2xring2", "cfg2xring2"], 4)}
    assert list(four) == ["sp2xring2", "cfg2xring2"]
    assert four["sp2xring2"].layout_dict == {"cfg": 1, "sp": 4, "tp": 1, "ulysses": 2, "ring": 2}
    assert ParallelConfig(**four["cfg2xring2"].config_kwargs).sp_mode == "ring"


def test_seeded_init_slices_and_depth():
    """A TP shard holds the slice of the full seeded weight; fp32-kept names stay fp32; a model
    capped to fewer layers holds the first layers of the deeper one."""
    from phyx.models.wan import WanModel, get_config
    from phyx.models.wan.model import keep_fp32
    from phyx.sharding import ShardSpec, mark

    def lin(spec):
        with torch.device("meta"):
            m = torch.nn.Sequential(torch.nn.Linear(8, 3 if spec else 6))   # local shape
        if spec:
            mark(m[0].weight, spec)
        return mg_init.init_seeded_(m, 3, torch.float32, "cpu")

    full = lin(None)[0].weight
    for r in range(2):
        part = lin(ShardSpec(0, r, 2))[0].weight
        assert torch.equal(part, full[3 * r:3 * r + 3]) and part.untyped_storage().nbytes() == 3 * 8 * 4
        assert mg_init.spec_of(part) == ShardSpec(0, r, 2)
    assert not torch.equal(lin(None)[0].weight, mg_init.init_seeded_(lin(None), 4, torch.float32, "cpu")[0].weight)

    cfg = get_config("tiny-t2v")
    with torch.device("meta"):
        deep, shallow = WanModel(cfg), WanModel(cfg.replace(num_layers=1))
    deep = mg_init.init_seeded_(deep, 0, torch.bfloat16, "cpu", keep_fp32=keep_fp32)
    shallow = mg_init.init_seeded_(shallow, 0, torch.bfloat16, "cpu", keep_fp32=keep_fp32)
    d = dict(deep.named_parameters())
    for n, p in shallow.named_parameters():
        assert torch.equal(p, d[n]), n
        assert p.dtype == (torch.float32 if keep_fp32(n) else torch.bfloat16), n
    assert mg_init.has_tp_shards(lin(ShardSpec(0, 0, 2))) and not mg_init.has_tp_shards(shallow)


# --- a real torchrun launch ---------------------------------------------------------------------
def test_torchrun_two_ranks_wan(tmp_path):
    from phyx.testing.multiproc import _free_port

    out = tmp_path / "res" / "wan_tiny.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(SCRIPT), "--model", "wan-tiny", "--res", "tiny", "--modes", "tp,sp,cfg,hybrid",
           "--iters", "2", "--dist-timeout", "60", "--out", str(out)]
    p = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["status"] == "complete" and res["world_size"] == 2 and res["dist_backend"] == "gloo"
    assert res["dtype"] == "float32" and res["model"]["layers"] == 2 and res["shape"]["seq_len"] == 45
    for b in ("cond", "guided"):
        assert res["reference"][b]["identical_across_ranks"] and res["reference"][b]["ms"] > 0
    modes = _modes(res)
    for name in ("tp2", "sp2", "cfg2"):
        r = modes[name]
        assert r["status"] == "ok", r
        assert r["parity"]["rel_l2"] < FP32_TOL and r["parity"]["verdict"] == "PASS", (name, r["parity"])
        assert r["outputs_identical_across_ranks"] and len(r["step_ms"]) == 2
        assert r["efficiency"] == pytest.approx(res["reference"][r["step"]]["ms"] / (2 * r["ms"]))
    assert modes["cfg2"]["step"] == "guided" and modes["tp2"]["step"] == "cond"
    # evidence that each layout really ran split: its collectives, and TP's halved weights
    assert modes["tp2"]["collectives_per_step"]["all_reduce"]["calls"] > 0
    assert modes["sp2"]["collectives_per_step"]["all_to_all_4d"]["calls"] > 0
    assert modes["cfg2"]["collectives_per_step"] == {"all_gather": {"calls": 1.0,
                                                                    "bytes": 4 * 3 * 6 * 10 * 4.0}}
    assert modes["tp2"]["params_rank0"] < 0.75 * res["model"]["params"]
    assert modes["hybrid"]["status"] == "skipped" and "4 ranks" in modes["hybrid"]["reason"]
    assert "tp2" in p.stdout and "PASS" in p.stdout


def test_single_process_reports_t1_and_skips_parallel_modes(tmp_path, monkeypatch):
    """World size 1 (no torchrun): the single-device t1s only; the run leaves the process's
    kernel policy as it found it."""
    import parallel_parity

    import phyx

    for k in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    policy = phyx.get_policy()
    out = tmp_path / "one.json"
    assert parallel_parity.main(["--model", "wan-tiny", "--res", "tiny", "--latent", "2x4x6", "--modes", "tp,sp",
                                 "--iters", "1", "--policy", "reference", "--out", str(out)]) == 0
    assert phyx.get_policy() == policy
    res = json.loads(out.read_text())
    assert res["world_size"] == 1 and res["dist_backend"] is None and res["status"] == "complete"
    assert res["shape"]["latent"] == [4, 2, 4, 6] and res["shape"]["seq_len"] == 12
    ref = res["reference"]      # one device: both baselines (every layout's t1) and the CFG floor
    assert ref["cond"]["ms"] > 0 and ref["guided"]["ms"] > 0
    assert ref["guided"]["noise_floor_two_forwards"]["rel_l2"] < FP32_TOL
    assert all(r["status"] == "skipped" and "more than one rank" in r["reason"] for r in res["modes"])


# --- a pool of 2 ranks: other families and planted bugs ----------------------------------------
def _run_harness(argv, plant=None):
    """In a pool rank: the harness's run() (not main(), which would end the pool's group),
    optionally with a planted parallel bug."""
    sys.path.insert(0, str(HARNESS))
    import parallel_parity

    import phyx.parallel.layers as layers
    from phyx.parallel.sequence import SequenceParallel as SP

    saved = [(SP, "shard_rope", SP.shard_rope), (SP, "shard", SP.shard), (layers, "tp_rms_norm", layers.tp_rms_norm)]
    if plant == "sp_rope_unsliced":    # every SP rank takes rank 0's RoPE rows
        SP.shard_rope = lambda self, cos, sin: tuple(t[: self.local_len] for t in (cos, sin))
    elif plant == "tp_local_norm":     # QK RMSNorm over the local heads only (no all-reduce)
        from phyx import ops
        layers.tp_rms_norm = lambda x, w, eps, full_dim, state=None: ops.rms_norm(x, w, eps)
    elif plant == "sp_raises":         # a layout that crashes (as an OOM would)
        def boom(*a, **k):
            raise RuntimeError("planted failure")
        SP.shard = boom
    try:
        return parallel_parity.run(parallel_parity.parse_args(argv))
    finally:
        for owner, n, f in saved:
            setattr(owner, n, f)


@pytest.fixture(scope="module")
def pool():
    with RankPool(2, env={"PHYX_BACKEND": "cpu", "PYTHONPATH": str(ROOT)}, dist_timeout_s=60) as p:
        yield p


@pytest.mark.parametrize("model", ["cosmos-predict2-tiny", "cosmos3-tiny"])
def test_cosmos_families_on_two_ranks(pool, tmp_path, model):
    out = tmp_path / f"{model}.json"
    res = pool.run(_run_harness, ["--model", model, "--res", "tiny", "--modes", "tp,sp,cfg", "--iters", "1",
                                  "--out", str(out)])[0]
    if res["status"] == "skipped":       # the family's package is missing what the harness needs
        assert res["reason"]
        pytest.skip(res["reason"])
    assert json.loads(out.read_text())["status"] == "complete"
    modes = _modes(res)
    for name, r in modes.items():
        if r["status"] == "skipped":
            assert name == "tp2" and "no tensor-parallel layers" in r["reason"], r
            continue
        assert r["status"] == "ok" and r["parity"]["rel_l2"] < FP32_TOL, (name, r.get("parity"))
    assert modes["sp2"]["status"] == "ok" and modes["cfg2"]["status"] == "ok"


@pytest.mark.parametrize("plant,broken", [("sp_rope_unsliced", "sp2"), ("tp_local_norm", "tp2")])
def test_planted_parallel_bug_fails_parity(pool, tmp_path, plant, broken):
    """A wrong parallel plan still runs and gives a plausible tensor: the harness must say FAIL
    for that layout, and PASS for the layout the bug does not touch."""
    res = pool.run(_run_harness, ["--model", "wan-tiny", "--res", "tiny", "--modes", "tp,sp", "--iters", "1",
                                  "--out", str(tmp_path / "bug.json")], plant)
    for rank_res in res:
        modes = _modes(rank_res)
        bad = modes[broken]["parity"]
        assert bad["verdict"] == "FAIL" and bad["rel_l2"] > 1e-3 and "rel_l2" in bad["why"], bad
        other = modes["tp2" if broken == "sp2" else "sp2"]["parity"]
        assert other["verdict"] == "PASS"


def test_failing_layout_is_recorded_and_stops_the_run(pool, tmp_path):
    out = tmp_path / "fail.json"
    outs = pool.run_outcomes(_run_harness, ["--model", "wan-tiny", "--res", "tiny", "--modes", "tp,sp,cfg",
                                            "--iters", "1", "--out", str(out)], "sp_raises")
    assert all(not o.ok and "planted failure" in o.error for o in outs)
    res = json.loads(out.read_text())
    assert res["status"] == "failed"
    modes = _modes(res)
    assert modes["tp2"]["status"] == "ok" and modes["tp2"]["parity"]["verdict"] == "PASS"
    assert modes["sp2"]["status"] == "failed" and "planted failure" in modes["sp2"]["error"]
    assert "cfg2" not in modes          # the run stops at the first failure
