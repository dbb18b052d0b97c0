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
    emulated = False

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
