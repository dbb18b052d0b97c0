"""A demo vendor. A real one sets device_type to its torch device ("npu", "xpu", ...), wraps
its torch device module in TorchDeviceModule, and registers its fused kernels."""
from __future__ import annotations

from phyx.backend.base import Backend, DeviceModule

from phyx_cpu_demo.kernels import KERNELS


class CpuDemoBackend(Backend):
    name = "cpu-demo"
    device_type = "cpu"               # the torch device type tensors live on
    dist_backend = "gloo"             # process-group backend (nccl / hccl / gloo ...)
    visible_devices_env = None        # e.g. "ASCEND_RT_VISIBLE_DEVICES"
    emulated = False                  # True: never autodetected, never reported as hardware results
    # Autodetect probes every registered backend, highest priority first (npu 20, cuda 10, cpu 0).
    # A demo stays below cpu so installing it never changes what autodetect picks; a real vendor
    # sets one above 0.
    priority = -10
    host_env_vars = ()                # host settings that change timings (recorded with results)

    @classmethod
    def probe(cls):
        # Must not raise: say whether the vendor's runtime is here, and why not.
        return True, "demo vendor: runs on the host CPU"

    def __init__(self):
        self.device = DeviceModule()  # real vendors: TorchDeviceModule(torch.<vendor>, "<type>")

    def kernels(self):
        # Picked under policy "fast"; "reference" keeps phyx's plain-torch references.
        return KERNELS

    def versions(self):
        import torch

        return {"torch": torch.__version__, "phyx_cpu_demo": "0.1.0"}

    # Every other hook has a default in phyx.backend.base.Backend; override what the vendor has:
    # hardware_info, determinism_env, profiler, set_reduced_precision_matmul / precision_flags,
    # dist_env_defaults, comm_buffer_cost, bench_direct_attention, bench_candidate_kernels.
    def hardware_info(self):
        return {"chip": "host cpu (demo)"}
