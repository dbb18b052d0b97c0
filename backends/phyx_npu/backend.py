"""Huawei Ascend NPU backend: torch_npu kernels, HCCL, ASCEND_RT_VISIBLE_DEVICES, torch.npu.

The backend is written against a torch_npu-like module object passed to the constructor (the
injection point): the real torch_npu (wrapped by RealTorchNpu) or phyx_npu.emulator's
EmulatedTorchNpu. All argument translation is in phyx_npu.translate.
"""
from __future__ import annotations

import contextlib
import os

import torch
import torch.nn.functional as F

from phyx.backend.base import Backend, DeviceModule, Kernel, OpSupport, TorchDeviceModule
from phyx.comm import DEFAULT_TIMEOUT_S
from phyx.kernels.spec import ATTENTION_FEATURES
from phyx_npu import hccl_env
from phyx_npu.capabilities import capabilities_for
from phyx_npu.translate import NpuKernels

_NPU_FLOATS = frozenset({torch.float32, torch.float16, torch.bfloat16})

# Determinism and debug switches (set before the runtime / communicators start).
NPU_DETERMINISM_ENV = {"HCCL_DETERMINISTIC": "true",      # deterministic HCCL reductions
                       "CLOSE_MATMUL_K_SHIFT": "1"}       # no K-axis split reordering in matmul
NPU_DEBUG_ENV = {"INF_NAN_MODE_ENABLE": "1",              # IEEE inf/nan instead of saturation
                 "ASCEND_LAUNCH_BLOCKING": "1"}           # synchronous launches: errors at the right op

# HCCL: bounded failure. Both HCCL timeouts follow phyx.comm's process-group timeout
# (PHYX_DIST_TIMEOUT_S) and stay below it, as Ascend asks: see phyx_npu.hccl_env. These are the
# values for the default 300 s (HCCL_EXEC_TIMEOUT 272 = 4 x 68, HCCL_CONNECT_TIMEOUT 252).
HCCL_ENV_DEFAULTS = hccl_env.hccl_env_defaults(DEFAULT_TIMEOUT_S, environ={})

_MISSING_MSG = (
    "the NPU backend needs the torch-npu package and the CANN runtime (libascendcl, libhccl; "
    "source the Ascend toolkit's set_env.sh so they are on LD_LIBRARY_PATH). To run the NPU "
    "code path on the CPU against an emulation of the torch_npu ops, use "
    "PHYX_BACKEND=npu-emulated (it proves the translation, not NPU numerics)")


class RealTorchNpu:
    """The real torch_npu, plus the device's native ops the translation must route around.

    `native_gelu` is torch's gelu as it runs on the NPU (it ignores `approximate`); it is here so
    the emulator can model that trap behind the same name."""

    def __init__(self, torch_npu_module):
        self._m = torch_npu_module
        self.__version__ = getattr(torch_npu_module, "__version__", "unknown")
        self.npu = torch_npu_module.npu

    def __getattr__(self, name):
        return getattr(self._m, name)

    @staticmethod
    def native_gelu(input, approximate="none"):  # noqa: A002
        return F.gelu(input, approximate=approximate)


class NpuBackend(Backend):
    name = "npu"
    device_type = "npu"
    dist_backend = "hccl"
    visible_devices_env = "ASCEND_RT_VISIBLE_DEVICES"
    priority = 20
    accelerator = "npu"   # npu-emulated inherits it, with emulated=True
    host_env_vars = ("TASK_QUEUE_ENABLE", "CPU_AFFINITY_CONF", "PYTORCH_NPU_ALLOC_CONF",
                     "ASCEND_RT_VISIBLE_DEVICES", "ASCEND_LAUNCH_BLOCKING", "HCCL_BUFFSIZE")

    @classmethod
    def probe(cls):
        try:
            import torch_npu  # noqa: F401
        except ModuleNotFoundError as e:
            if e.name == "torch_npu":
                return False, f"torch_npu is not installed; {_MISSING_MSG}"
            return False, f"torch_npu failed to import ({e}); {_MISSING_MSG}"
        except (ImportError, OSError) as e:  # typically libascendcl.so / libhccl.so not found
            return False, f"torch_npu is installed but cannot load the CANN runtime ({e}); {_MISSING_MSG}"
        except Exception as e:  # noqa: BLE001 - probe must not raise
            return False, f"torch_npu failed to import ({type(e).__name__}: {e}); {_MISSING_MSG}"
        try:
            n = torch.npu.device_count() if torch.npu.is_available() else 0
        except Exception as e:  # noqa: BLE001
            return False, f"torch_npu imported but the NPU runtime failed ({e}); check the driver"
        if n == 0:
            return False, ("torch_npu imported but no NPU is visible (check ASCEND_RT_VISIBLE_DEVICES "
                           "and the driver with npu-smi info)")
        return True, f"{n} NPU(s), {torch.npu.get_device_name(0)}"

    def __init__(self, torch_npu_module=None, device_module: DeviceModule | None = None):
        if torch_npu_module is None:
            import torch_npu

            torch_npu_module = RealTorchNpu(torch_npu)
        self.tnpu = torch_npu_module
        self.device = device_module if device_module is not None else TorchDeviceModule(torch.npu, "npu")
        self.capabilities = capabilities_for(self._soc_name())
        self.npu_kernels = NpuKernels(self.tnpu, self.capabilities.fused_ops)

    def _soc_name(self) -> str:
        try:
            return str(self.tnpu.npu.get_device_name(0))
        except Exception:  # noqa: BLE001
            return "unknown"

    # --- kernels -----------------------------------------------------------------------------
    def kernels(self):
        caps, k = self.capabilities, self.npu_kernels
        out = []
        fa, fia = caps.has("npu_fusion_attention"), caps.has("npu_fused_infer_attention_score")
        if fa or fia:
            name = "+".join(n for n, ok in (("npu_fusion_attention", fa),
                                           ("npu_fused_infer_attention_score", fia)) if ok)
            out.append(Kernel("attention", f"torch_npu.{name}", k.attention,
                              OpSupport(_NPU_FLOATS, ATTENTION_FEATURES, backward=fa), "fast",
                              "FA for training / fp32 / additive masks, FIA for fp16/bf16 inference"))
        if caps.has("npu_rms_norm"):
            out.append(Kernel("rms_norm", "torch_npu.npu_rms_norm", k.rms_norm,
                              OpSupport(_NPU_FLOATS, frozenset({"weight"})), "fast",
                              "gamma applied in fp32, one rounding (reference rounds before gamma)"))
        if caps.has("npu_rotary_mul"):
            out.append(Kernel("rope", "torch_npu.npu_rotary_mul", k.rope,
                              OpSupport(_NPU_FLOATS, frozenset({"adjacent", "half"})), "fast",
                              "adjacent -> rotary_mode 'interleave', half -> 'half'; run in fp32"))
        if caps.has("npu_swiglu"):
            out.append(Kernel("swiglu", "torch_npu.npu_swiglu", k.swiglu, OpSupport(_NPU_FLOATS), "fast",
                              "swish(first half) * second half == phyx's [gate | up]"))
        if caps.has("npu_gelu"):
            out.append(Kernel("gelu", "torch_npu.npu_gelu", k.gelu,
                              OpSupport(_NPU_FLOATS, frozenset({"none", "tanh"})), "fast",
                              "exact GELU needs npu_gelu: the native gelu ignores `approximate`"))
        return out

    # --- precision -----------------------------------------------------------------------------
    def set_reduced_precision_matmul(self, allowed: bool) -> dict:
        """HF32 for matmul and conv (conv's is ON by default on the NPU and changes fp32 results)."""
        self.tnpu.npu.matmul.allow_hf32 = bool(allowed)
        self.tnpu.npu.conv.allow_hf32 = bool(allowed)
        return self.precision_flags()

    def precision_flags(self) -> dict:
        return {"npu.matmul.allow_hf32": bool(self.tnpu.npu.matmul.allow_hf32),
                "npu.conv.allow_hf32": bool(self.tnpu.npu.conv.allow_hf32)}

    # --- distributed -------------------------------------------------------------------------
    def dist_env_defaults(self, timeout_s: float | None = None) -> dict:
        """Bounded HCCL failures for a process-group timeout of `timeout_s` (default
        PHYX_DIST_TIMEOUT_S); HCCL values the user set are checked against it (phyx_npu.hccl_env).
        Notes for phyx.comm: do not rely on ReduceOp.AVG on HCCL (sum, then divide); HCCL_BUFFSIZE
        (MB, default 200) is allocated per communicator, twice (send + receive), so it multiplies
        with the number of mesh groups -- lower it for large meshes (`phyx parallel plan`);
        multi-node runs should pin the host NIC with HCCL_IF_IP (or HCCL_SOCKET_IFNAME)."""
        from phyx.comm import dist_timeout_s

        return hccl_env.hccl_env_defaults(dist_timeout_s() if timeout_s is None else timeout_s)

    # --- reporting -----------------------------------------------------------------------------
    def soc_info(self) -> dict:
        def ask(module):
            try:
                return str(self.tnpu.npu.get_cann_version(module))
            except Exception as e:  # noqa: BLE001 - report, do not fail `phyx info`
                return f"unknown ({type(e).__name__})"

        c = self.capabilities
        return {"soc": c.soc, "family": c.family, "cann": ask("CANN"), "driver": ask("DRIVER"),
                "torch_npu": getattr(self.tnpu, "__version__", "unknown"),
                "fused_ops": ",".join(sorted(c.fused_ops)) or "none", "note": c.note}

    def versions(self) -> dict:
        v = {"torch": torch.__version__, "torch_npu": getattr(self.tnpu, "__version__", "unknown")}
        if self.visible_devices_env:
            v["visible_devices"] = os.environ.get(self.visible_devices_env, "(all)")
        return v

    def certify_facts(self, slow: bool = False) -> list:
        """The NPU facts the docs leave uncertain, each tested on the machine (phyx certify)."""
        from phyx_npu.certify_facts import run_facts

        return run_facts(self, slow=slow)

    def hardware_info(self) -> dict:
        return self.soc_info()

    # --- determinism, profiling, communicator memory ----------------------------------------------
    @classmethod
    def determinism_env(cls, debug: bool = False) -> dict:
        env = dict(NPU_DETERMINISM_ENV)
        if debug:
            env.update(NPU_DEBUG_ENV)
        return env

    @contextlib.contextmanager
    def profiler(self, out_dir: str):
        """torch_npu's profiler (what Ascend's tools read), CPU + NPU activities, level 1 with
        AI Core pipe utilisation, a TensorBoard trace into out_dir."""
        os.makedirs(out_dir, exist_ok=True)
        prof = self.tnpu.profiler
        cfg = prof._ExperimentalConfig(profiler_level=prof.ProfilerLevel.Level1,
                                       aic_metrics=prof.AiCMetrics.PipeUtilization)
        with prof.profile(activities=[prof.ProfilerActivity.CPU, prof.ProfilerActivity.NPU],
                          on_trace_ready=prof.tensorboard_trace_handler(out_dir),
                          record_shapes=True, experimental_config=cfg) as p:
            yield p

    @classmethod
    def comm_buffer_cost(cls, config, **options) -> dict:
        """HCCL: every communicator takes 2 x HCCL_BUFFSIZE (phyx.parallel.plan.hccl_buffer_cost)."""
        from phyx.parallel.plan import hccl_buffer_cost  # noqa: PLC0415 - plan imports no backend

        return hccl_buffer_cost(config, **options)
