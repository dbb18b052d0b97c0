"""phyx bench on the CPU: a quick ops run writes a complete result file, merge builds the
cross-machine table from two files, and a non-bench JSON is refused with a clear message."""
from __future__ import annotations

import json

import pytest
import torch

import phyx
from phyx.tools.bench.env import write_json
from phyx.tools.bench.merge import load, table
from phyx.tools.bench.ops import run_ops
from phyx.tools.parity.backends import using_backend


@pytest.fixture(scope="module")
def quick_result():
    with using_backend("cpu", "fast"):
        return run_ops(quick=True, sections=("fused", "dispatch"), log=lambda *_: None)


def test_quick_ops_result_is_complete(quick_result, tmp_path):
    r = quick_result
    assert r["meta"]["backend"] == "cpu" and r["meta"]["date"]
    assert "TASK_QUEUE_ENABLE" in r["meta"]["host"]["settings"]
    ops_seen = {rec["op"] for rec in r["fused"]}
    assert ops_seen == {"rms_norm", "rope", "modulate", "gated_residual", "norm_modulate"}
    for rec in r["fused"]:
        assert "error" not in rec, rec
        assert rec["ms"] > 0 and rec["gbps"] > 0
        assert rec["parity"]["verdict"] == "PASS", rec
    d = r["dispatch"]
    assert d["attention.phyx_ops"] > 0 and "attention.overhead_us" in d
    path = tmp_path / "r.json"
    write_json(r, str(path))
    assert json.loads(path.read_text())["kind"] == "phyx-bench-ops"


def test_merge_builds_cross_machine_table(quick_result, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    other = json.loads(json.dumps(quick_result, default=str))
    other["meta"].update(backend="npu", device="Ascend910B3", emulated=False)
    for rec in other["fused"]:
        rec["ms"] = rec.get("ms", 1.0) * 2
    write_json(quick_result, str(a))
    write_json(other, str(b))
    text = table(load([str(a), str(b)]))
    assert "Ascend910B3" in text and "| fused | rms_norm_tiny |" in text
    assert "2.00x" in text  # the time ratio column against the first file
    assert "PASS" in text


def test_merge_refuses_foreign_json(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a phyx bench result"):
        load([str(p)])


def test_cli_has_bench_commands():
    from phyx.cli import build_parser

    args = build_parser().parse_args(["bench", "merge", "a.json", "b.json"])
    assert args.files == ["a.json", "b.json"]
    assert phyx.ops  # the CLI imports phyx lazily; the module is importable


# ------------------------------------------------------------------ Cosmos3 model-step peer
def test_cosmos3_quick_models_row_has_the_diffusers_peer():
    from phyx.tools.bench.models import run_models

    with using_backend("cpu", "fast"):
        r = run_models(models=["cosmos3-nano-720p"], modes=("forward",), quick=True, peak_tflops=1.0,
                       log=lambda *_: None)
    rows = {rec["impl"]: rec for rec in r["models"]}
    assert set(rows) == {"phyx", "diffusers"}
    for impl, rec in rows.items():
        assert "error" not in rec and "flops_error" not in rec, rec
        assert rec["ms"] > 0 and rec["flops"] > 0, rec
    # same config and input shapes: the two count (almost) the same FLOPs
    assert abs(rows["phyx"]["flops"] / rows["diffusers"]["flops"] - 1) < 0.01
    assert rows["phyx"]["speedup_vs_diffusers"] > 0


def test_cosmos3_peer_call_computes_the_same_step():
    import torch

    from phyx.testing import rel_l2
    from phyx.tools.bench.models import MODELS

    spec = MODELS["cosmos3-nano-720p"](True)
    with using_backend("cpu", "fast"):
        ref, ref_call = spec["diffusers"](torch.float32)
        ours, our_call = spec["phyx"](torch.float32)
        ours.load_state_dict(ref.state_dict(), strict=True)
        args = spec["inputs"](torch.float32)
        with torch.no_grad():
            want, got = ref_call(ref, *args), our_call(ours, *args)
    assert got.shape == want.shape == (1, *spec["shape"]["latent"])
    assert rel_l2(got, want) < 1e-5


def test_flop_count_survives_a_torch_without_gqa_sdpa_formulas(monkeypatch):
    import torch
    import torch.utils.flop_counter as fcm

    from phyx.tools.bench.models import _count_flops

    def strict(query_shape, key_shape, value_shape):   # older torch: equal head counts asserted
        b, h, s_q, d = query_shape
        assert tuple(key_shape[:2]) == (b, h) and tuple(value_shape[:2]) == (b, h)
        return 4 * b * h * s_q * key_shape[2] * d

    monkeypatch.setattr(fcm, "sdpa_flop_count", strict)
    q = torch.empty(1, 8, 16, 4, device="meta")
    k = torch.empty(1, 2, 24, 4, device="meta")        # 4 query heads per KV head

    def step():
        torch.ops.aten._scaled_dot_product_efficient_attention(q, k, k, None, False)

    with pytest.raises(AssertionError):                 # the stock mapping fails on GQA here
        with fcm.FlopCounterMode(display=False):
            step()
    flops, why = _count_flops(step)
    assert why is None and flops == 4 * 8 * 16 * 24 * 4


def test_models_layers_and_breakdown_on_cpu():
    """--layers builds the first N blocks (and refuses N beyond the model); --breakdown records
    where one step's time went, per kernel category, with matmul among them."""
    from phyx.tools.bench.models import MODELS, run_models

    spec = MODELS["wan2.1-1.3b-480p81f"](True, layers=1)
    m, _ = spec["phyx"](torch.float32)
    assert len(m.blocks) == 1
    with pytest.raises(ValueError, match="layers must be in 1..2"):
        MODELS["wan2.1-1.3b-480p81f"](True, layers=3)
    with pytest.raises(ValueError, match="unknown model"):
        run_models(models=["no-such-model"], quick=True, peak_tflops=1.0, log=lambda *_: None)
    with using_backend("cpu", "fast"):
        r = run_models(models=["wan2.1-1.3b-480p81f"], modes=("forward",), quick=True, peer=False,
                       peak_tflops=1.0, layers=1, breakdown=True, log=lambda *_: None)
    assert r["layers"] == 1
    rec = r["models"][0]
    bd = rec["breakdown"]
    assert bd["source"] == "cpu aten self time" and bd["total_ms"] > 0
    assert "matmul" in bd["ms_per_category"] and bd["top"]
    assert abs(sum(bd["ms_per_category"].values()) - bd["total_ms"]) < 1e-6


@pytest.mark.parametrize("name,category", [
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3", "attention"),
    ("flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>>", "attention"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64", "matmul"),
    ("nvjet_hsh_256x128_64x4_1x2_h_bz_coopA_NTN", "matmul"),
    ("_rms_norm_bwd_kernel", "triton"),
    ("triton_poi_fused__to_copy_add_mul_0", "triton"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float, float, false>", "norm"),
    ("void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda>", "copy/cast"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>", "elementwise"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, MeanOps>>", "reduction"),
])
def test_kernel_names_fall_in_their_category(name, category):
    from phyx.tools.bench.profile import categorise

    assert categorise(name) == category


def test_compile_blocks_finds_the_repeated_blocks():
    from phyx.tools.bench.models import MODELS, repeated_blocks

    spec = MODELS["cosmos3-nano-720p"](True)
    m, _ = spec["phyx"](torch.float32)
    assert repeated_blocks(m) == list(m.layers)
    with pytest.raises(ValueError, match="no nn.ModuleList"):
        repeated_blocks(torch.nn.Linear(2, 2))


def test_npu_profiler_is_called_as_torch_npu_2_14_declares(monkeypatch, tmp_path):
    """`--profile` on an NPU builds torch_npu's profiler. No NPU here, so a stand-in module with
    the signatures of torch_npu 2.14 (torch_npu/profiler/profiler.py, experimental_config.py:
    keyword-only arguments, these names) refuses any argument the real one would refuse."""
    import types

    import phyx.tools.bench.profile as bp

    calls = {}

    def profile(*, activities=None, schedule=None, on_trace_ready=None, record_shapes=False,
                profile_memory=False, with_stack=False, with_flops=False, with_modules=False,
                experimental_config=None, execution_trace_observer=None, custom_trace_id_callback=None):
        calls["profile"] = dict(activities=activities, on_trace_ready=on_trace_ready,
                                experimental_config=experimental_config)

        class _Ctx:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                calls["exited"] = True
                return False
        return _Ctx()

    def experimental_config(profiler_level=0, aic_metrics=0, l2_cache=False, msprof_tx=False, mstx=False,
                            data_simplification=True, record_op_args=False, op_attr=False,
                            gc_detect_threshold=None, export_type="text", host_sys=None,
                            mstx_domain_include=None, mstx_domain_exclude=None, sys_io=False,
                            sys_interconnection=False):
        return ("cfg", profiler_level, aic_metrics)

    def tensorboard_trace_handler(dir_name=None, worker_name=None, analyse_flag=True, async_mode=False):
        calls["trace_dir"] = dir_name
        return "handler"

    prof = types.SimpleNamespace(
        profile=profile, _ExperimentalConfig=experimental_config,
        tensorboard_trace_handler=tensorboard_trace_handler,
        ProfilerActivity=types.SimpleNamespace(CPU="CPU", NPU="NPU"),
        ProfilerLevel=types.SimpleNamespace(Level0=0, Level1=1, Level2=2),
        AiCMetrics=types.SimpleNamespace(PipeUtilization=10))
    from phyx.backend.base import DeviceModule
    from phyx_npu.backend import NpuBackend
    from phyx_npu.emulator import EmulatedTorchNpu

    tnpu = EmulatedTorchNpu("Ascend910B3")
    tnpu.profiler = prof   # the NPU backend's profiler hook reads torch_npu.profiler
    backend = NpuBackend(tnpu, device_module=DeviceModule())
    monkeypatch.setattr(phyx, "get_backend", lambda: backend)
    with bp.maybe_profile(str(tmp_path / "prof")):
        pass
    assert calls["profile"]["activities"] == ["CPU", "NPU"]
    assert calls["profile"]["on_trace_ready"] == "handler" and calls["trace_dir"] == str(tmp_path / "prof")
    assert calls["profile"]["experimental_config"] == ("cfg", 1, 10) and calls["exited"]


def test_time_call_warms_up_before_timing():
    """First calls of a new shape compile / pick algorithms / allocate: never timed."""
    import time

    from phyx.tools.bench.timing import time_call

    n = {"calls": 0}

    def fn():
        n["calls"] += 1
        if n["calls"] <= 2:  # a slow first call, as a kernel compile would be
            time.sleep(0.05)

    with using_backend("cpu", "fast"):
        t = time_call(fn, warmup=2, iters=3)
    assert n["calls"] == 2 + t["iters"] and t["max_ms"] < 40


def test_peer_attention_fa4_runs_diffusers_fa4_backend_and_counts_flops_through_sdpa(monkeypatch):
    """--peer-attention fa4: diffusers' flash_4_hub backend gets the installed flash-attn-4 (here a
    plain-torch stand-in with its contract) for the timed steps; FLOPs are counted through SDPA,
    so both peers report the same count."""
    import importlib.machinery
    import sys
    import types

    from phyx.ops import reference
    from phyx.tools.bench.models import run_models

    calls = []

    def fake_fa4(q, k, v, softmax_scale=None, causal=False, **_):
        calls.append(tuple(q.shape))
        return reference.attention(q, k, v, is_causal=causal, scale=softmax_scale, return_lse=True)

    from diffusers.models import attention_dispatch as ad  # before the stand-in: it probes flash_attn

    def module(name):
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)  # diffusers probes with find_spec
        return m

    cute = module("flash_attn.cute")
    cute.flash_attn_func = fake_fa4
    monkeypatch.setitem(sys.modules, "flash_attn", module("flash_attn"))
    monkeypatch.setitem(sys.modules, "flash_attn.cute", cute)
    hub = ad._HUB_KERNELS_REGISTRY[ad.AttentionBackendName.FLASH_4_HUB]
    monkeypatch.setattr(hub, "kernel_fn", None)
    rows = {}
    with using_backend("cpu", "fast"):
        for peer in ("native", "fa4"):
            r = run_models(models=["wan2.1-1.3b-480p81f"], modes=("forward",), quick=True,
                           peak_tflops=1.0, peer_attention=peer, log=lambda *_: None)
            rows[peer] = {rec["impl"]: rec for rec in r["models"]}
            assert r["peer_attention"] == peer
    assert calls, "diffusers never called FlashAttention-4"
    assert ad._AttentionBackendRegistry._active_backend == ad.AttentionBackendName.NATIVE  # restored
    d_native, d_fa4 = rows["native"]["diffusers"], rows["fa4"]["diffusers"]
    assert "error" not in d_fa4, d_fa4
    assert "FlashAttention-4" in d_fa4["attention"] and "SDPA" in d_native["attention"]
    assert d_fa4["flops"] == d_native["flops"] > 0
    assert rows["fa4"]["phyx"]["attention"] == rows["native"]["phyx"]["attention"] == "torch.sdpa"


def test_peer_attention_rejects_unknown_and_missing_fa4(monkeypatch):
    import sys

    from phyx.tools.bench.models import _diffusers_backend

    with pytest.raises(ValueError, match="peer-attention"):
        _diffusers_backend("sage")
    monkeypatch.setitem(sys.modules, "flash_attn.cute", None)  # import fails
    with pytest.raises(ValueError, match="flash-attn-4"):
        _diffusers_backend("fa4")


def test_models_profile_writes_one_trace_per_row(tmp_path):
    """`bench models --profile DIR`: one extra, untimed step of each row under the profiler
    (torch_npu's on an NPU, torch's here), in DIR/<case>-<mode>-<impl>."""
    from phyx.tools.bench.models import run_models

    with using_backend("cpu", "fast"):
        r = run_models(models=["wan2.1-1.3b-480p81f"], modes=("forward",), quick=True, peak_tflops=1.0,
                       profile_dir=str(tmp_path), log=lambda *_: None)
    for rec in r["models"]:
        assert "error" not in rec, rec
        trace = tmp_path / f"{rec['case']}-forward-{rec['impl']}" / "trace.json"
        assert rec["profile_dir"] == str(trace.parent)
        events = json.loads(trace.read_text())["traceEvents"]
        assert any("linear" in e.get("name", "") or "addmm" in e.get("name", "") for e in events)
