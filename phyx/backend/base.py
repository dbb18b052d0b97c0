"""The backend interface: what one vendor plug-in provides.

Kept deliberately small (vLLM's Platform is the model): identity, a device module, the
process-group backend name, the kernels it registers per op, a version report, and every vendor
hook generic code calls, each declared here with a default (generic code never probes a backend
with hasattr, nor decides by its name):

- hardware_info() -> dict            chip / firmware / runtime versions (`phyx info`, manifests)
- determinism_env(debug) -> dict     env switches for deterministic (and debug) runs (classmethod)
- profiler(out_dir)                  context manager: the vendor's profiler around a block
- kernel_profiler_activity           torch.profiler activity that sees device kernels, or None
- set_reduced_precision_matmul / precision_flags   TF32 / HF32
- host_env_vars                      host settings that change timings (recorded with results)
- dist_env_defaults() -> dict        bounded collective failures
- comm_buffer_cost(config) -> dict   device memory the layout's communicators take (classmethod)
- bench_direct_attention / bench_candidate_kernels   benchmark baselines and extra candidates
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterable

import torch

from phyx.kernels.spec import POLICIES, Kernel, OpSupport  # noqa: F401 - re-exported


class DeviceModule:
    """Device API model code uses instead of torch.cuda / torch.npu. CPU version: no-ops."""

    device_type = "cpu"

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return 1

    def current_device(self) -> int:
        return 0

    def set_device(self, index: int) -> None:
        return None

    def synchronize(self, device: Any = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def Stream(self, *a, **k):  # noqa: N802 - mirrors torch naming
        return _NullStream()

    def Event(self, enable_timing: bool = False):  # noqa: N802
        return _HostEvent(enable_timing)

    def stream(self, s):
        return contextlib.nullcontext()

    def current_stream(self):
        return _NullStream()

    def memory_allocated(self, device: Any = None) -> int:
        return 0

    def max_memory_allocated(self, device: Any = None) -> int:
        return 0

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_name(self, index: int = 0) -> str:
        import platform

        return platform.processor() or platform.machine()


class _NullStream:
    def synchronize(self):
        return None

    def wait_stream(self, other):
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _HostEvent:
    def __init__(self, enable_timing: bool = False):
        self.t = None

    def record(self, stream=None):
        import time

        self.t = time.perf_counter()

    def synchronize(self):
        return None

    def wait(self, stream=None):
        return None

    def elapsed_time(self, end: "_HostEvent") -> float:
        return (end.t - self.t) * 1e3


class TorchDeviceModule(DeviceModule):
    """Wraps a torch device module (torch.cuda, torch.npu) behind the same API."""

    def __init__(self, module, device_type: str):
        self._m = module
        self.device_type = device_type

    def is_available(self):
        return self._m.is_available()

    def device_count(self):
        return self._m.device_count()

    def current_device(self):
        return self._m.current_device()

    def set_device(self, index):
        self._m.set_device(index)

    def synchronize(self, device=None):
        self._m.synchronize(device)

    def manual_seed(self, seed):
        torch.manual_seed(seed)
        self._m.manual_seed_all(seed)

    def Stream(self, *a, **k):  # noqa: N802
        return self._m.Stream(*a, **k)

    def Event(self, enable_timing=False):  # noqa: N802
        return self._m.Event(enable_timing=enable_timing)

    def stream(self, s):
        return self._m.stream(s)

    def current_stream(self):
        return self._m.current_stream()

    def memory_allocated(self, device=None):
        return self._m.memory_allocated(device)

    def max_memory_allocated(self, device=None):
        return self._m.max_memory_allocated(device)

    def reset_peak_memory_stats(self, device=None):
        self._m.reset_peak_memory_stats(device)

    def empty_cache(self):
        self._m.empty_cache()

    def get_device_name(self, index=0):
        return self._m.get_device_name(index)


class Backend:
    """One vendor. Subclasses set the class attributes and override `kernels`."""

    name: str = "base"
    device_type: str = "cpu"          # torch device type tensors live on
    dist_backend: str = "gloo"        # process-group backend name
    visible_devices_env: str | None = None
    emulated: bool = False            # True: runs are never reported as real-hardware results;
                                      # never autodetected
    priority: int = 0                 # autodetect order: higher first (npu 20, cuda 10, cpu 0)
    accelerator: str = "cpu"          # the hardware its runs stand for in reports: cpu | gpu | npu
                                      # (an emulated backend's runs stand for none: see accelerator_of)
    host_env_vars: tuple = ()         # host settings that change timings on this vendor
    kernel_profiler_activity: str | None = None   # torch.profiler.ProfilerActivity name of device kernels

    @classmethod
    def probe(cls) -> tuple[bool, str]:
        """(available, reason). Must not raise; used by autodetect and `phyx info`."""
        return True, "always available"

    def __init__(self) -> None:
        self.device = DeviceModule()

    # --- kernels -------------------------------------------------------------------
    def kernels(self) -> Iterable[Kernel]:
        """Vendor kernels (policy 'fast'). The plain-torch references are added by phyx."""
        return ()

    # --- precision switches ----------------------------------------------------------
    def set_reduced_precision_matmul(self, allowed: bool) -> dict:
        """TF32 / HF32 on or off. Returns the flags now in force (recorded in manifests)."""
        return {}

    def precision_flags(self) -> dict:
        return {}

    # --- distributed -------------------------------------------------------------------
    def dist_env_defaults(self, timeout_s: float | None = None) -> dict:
        """Environment switches that make collective failures bounded on this vendor, for a
        process-group timeout of `timeout_s` seconds (vendor timeouts must stay below it)."""
        return {}

    def torch_device(self, index: int | None = None) -> torch.device:
        if self.device_type == "cpu" or index is None:
            return torch.device(self.device_type)
        return torch.device(self.device_type, index)

    def versions(self) -> dict:
        return {"torch": torch.__version__}

    def describe_devices(self) -> list[str]:
        return [self.device.get_device_name(i) for i in range(self.device.device_count())]

    # --- vendor hooks with defaults --------------------------------------------------------
    def hardware_info(self) -> dict:
        """Chip, firmware and runtime versions beyond versions() (e.g. SoC, CANN, driver)."""
        return {}

    def certify_facts(self, slow: bool = False) -> list:
        """The vendor's hardware-fact tests for `phyx certify` (phyx.tools.certify.verdict.Check
        records): facts the docs leave uncertain, settled on the first machine. None by default."""
        return []

    @classmethod
    def determinism_env(cls, debug: bool = False) -> dict:
        """Env switches that make runs deterministic on this vendor (debug: plus synchronous
        launches / IEEE inf-nan). Read at runtime / communicator start: set them early."""
        return {}

    def profiler(self, out_dir: str):
        """A context manager recording a trace of the block into out_dir (default: torch.profiler
        with this backend's kernel activity, a Chrome trace out_dir/trace.json)."""
        return torch_profiler(out_dir, self.kernel_profiler_activity)

    @classmethod
    def comm_buffer_cost(cls, config, **options) -> dict:
        """Device memory the communicators of parallel layout `config` take per rank on this
        vendor ({} when the vendor reserves none up front). A classmethod: plans for a vendor
        not present here."""
        return {}

    def bench_direct_attention(self, q, k, v, causal) -> dict:
        """{label: zero-argument callable}: the vendor's attention kernels called without phyx,
        the baseline a benchmark holds phyx's dispatch to."""
        return {}

    def bench_candidate_kernels(self, op: str) -> list:
        """Kernels worth timing for op even though not registered (e.g. where eager won)."""
        return []


@contextlib.contextmanager
def torch_profiler(out_dir: str, device_activity: str | None = None):
    """torch.profiler over the block (CPU, plus `device_activity` such as 'CUDA'), exported as a
    Chrome trace to out_dir/trace.json."""
    import torch.profiler as tp

    os.makedirs(out_dir, exist_ok=True)
    acts = [tp.ProfilerActivity.CPU]
    if device_activity:
        acts.append(getattr(tp.ProfilerActivity, device_activity))
    with tp.profile(activities=acts, record_shapes=True) as p:
        yield p
    p.export_chrome_trace(os.path.join(out_dir, "trace.json"))
