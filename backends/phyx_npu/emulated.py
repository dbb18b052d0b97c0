"""`npu-emulated`: the NPU backend's own code path on the CPU, calling the torch_npu emulation,
with gloo standing in for HCCL. It proves the translation, never NPU numerics; its runs are
marked emulated and must never be reported as NPU results."""
from __future__ import annotations

import platform

from phyx.backend.base import Backend, DeviceModule
from phyx_npu.backend import NpuBackend
from phyx_npu.emulator import EmulatedTorchNpu

DEFAULT_SOC = "Ascend910B3"   # the emulator follows the A2 op rules


class NpuEmulatedBackend(NpuBackend):
    name = "npu-emulated"
    device_type = "cpu"
    dist_backend = "gloo"
    visible_devices_env = None
    emulated = True
    priority = -1   # never autodetected

    @classmethod
    def probe(cls):
        return True, ("always available: the NPU backend's code path against an emulation of "
                      "torch_npu on the CPU (proves the translation, not NPU numerics)")

    def __init__(self, soc: str = DEFAULT_SOC, jit_compile: bool = False):
        super().__init__(EmulatedTorchNpu(soc, jit_compile), device_module=DeviceModule())

    def dist_env_defaults(self, timeout_s: float | None = None) -> dict:
        return {}   # gloo stands in for HCCL; the HCCL switches would be ignored

    def profiler(self, out_dir: str):
        return Backend.profiler(self, out_dir)   # torch.profiler on the host, not torch_npu's

    @classmethod
    def comm_buffer_cost(cls, config, **options) -> dict:
        return {}   # gloo reserves no HCCL buffers

    def describe_devices(self):
        return [f"emulated {self.capabilities.soc} on cpu ({platform.machine()})"]
