"""Optional profiler around a benchmark run (`--profile DIR`). On the NPU it is torch_npu's
profiler (what Ascend's tools read); elsewhere torch.profiler. Off unless asked: a profiler
changes the timings it records."""
from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def maybe_profile(out_dir: str | None):
    if not out_dir:
        yield None
        return
    import phyx

    os.makedirs(out_dir, exist_ok=True)
    backend = phyx.get_backend()
    if backend.device_type == "npu":
        import torch_npu  # noqa: PLC0415 - only on NPU machines

        prof = torch_npu.profiler
        cfg = prof._ExperimentalConfig(profiler_level=prof.ProfilerLevel.Level1,
                                       aic_metrics=prof.AiCMetrics.PipeUtilization)
        with prof.profile(activities=[prof.ProfilerActivity.CPU, prof.ProfilerActivity.NPU],
                          on_trace_ready=prof.tensorboard_trace_handler(out_dir),
                          record_shapes=True, experimental_config=cfg) as p:
            yield p
        return
    import torch.profiler as tp

    acts = [tp.ProfilerActivity.CPU]
    if backend.device_type == "cuda":
        acts.append(tp.ProfilerActivity.CUDA)
    with tp.profile(activities=acts, record_shapes=True) as p:
        yield p
    p.export_chrome_trace(os.path.join(out_dir, "trace.json"))
