"""NVIDIA CUDA backend: torch SDPA (cuDNN / flash / efficient), flash-attn 2/3/4 when installed,
Triton fused kernels where they beat eager; NCCL."""
from __future__ import annotations

import os

import torch

from phyx.backend.base import Backend, TorchDeviceModule
from phyx_cuda import kernels as ck


class CudaBackend(Backend):
    name = "cuda"
    device_type = "cuda"
    dist_backend = "nccl"
    visible_devices_env = "CUDA_VISIBLE_DEVICES"
    priority = 10
    accelerator = "gpu"
    host_env_vars = ("PYTORCH_CUDA_ALLOC_CONF", "CUDA_VISIBLE_DEVICES", "CUDA_LAUNCH_BLOCKING",
                     "NCCL_NVLS_ENABLE", "PHYX_CUDA_TRITON", "PHYX_CUDA_FA4")
    kernel_profiler_activity = "CUDA"

    @classmethod
    def probe(cls):
        if getattr(torch.version, "cuda", None) is None:
            return False, f"torch {torch.__version__} is a CPU-only build (no CUDA runtime)"
        if not torch.cuda.is_available():
            return False, "torch has CUDA but no GPU is visible (check CUDA_VISIBLE_DEVICES and the driver)"
        return True, f"{torch.cuda.device_count()} CUDA device(s), CUDA {torch.version.cuda}"

    def __init__(self):
        self.device = TorchDeviceModule(torch.cuda, "cuda")

    def kernels(self):
        # attention: 'sdpa' first (torch picks cuDNN / flash / efficient; lse through aten's
        # kernels), unless FlashAttention-4 is installed and was measured faster on this GPU's
        # architecture ('flash_attn4_or_sdpa' first); then the pinned SDPA variants and flash-attn
        # 2/3/4 when importable; then the Triton fused ops that beat eager. Built once per backend.
        if getattr(self, "_kernels", None) is None:
            self._kernels = ck.extra_kernels()
        return self._kernels

    # --- benchmark hooks (phyx.tools.bench) -------------------------------------------------
    def bench_direct_attention(self, q, k, v, causal):
        """Vendor attention kernels called without phyx: the baseline phyx must match."""
        from phyx_cuda.attention import direct_calls

        return direct_calls(q, k, v, causal)

    def bench_candidate_kernels(self, op):
        """Kernels worth timing for `op` even if not registered (Triton where eager won)."""
        return [k for k in ck.triton_kernels(all_ops=True) if k.op == op]

    @classmethod
    def determinism_env(cls, debug=False):
        # cuBLAS reuses one workspace per stream configuration: deterministic split-K reductions.
        env = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
        if debug:
            env["CUDA_LAUNCH_BLOCKING"] = "1"   # synchronous launches: errors at the right op
        return env

    def set_reduced_precision_matmul(self, allowed):
        torch.backends.cuda.matmul.allow_tf32 = allowed
        torch.backends.cudnn.allow_tf32 = allowed
        return self.precision_flags()

    def precision_flags(self):
        return {"cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32}

    def dist_env_defaults(self, timeout_s=None):
        # Async error handling makes a dead peer abort the collective instead of hanging.
        return {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"}

    def versions(self):
        v = {"torch": torch.__version__, "cuda": torch.version.cuda,
             "cudnn": str(torch.backends.cudnn.version())}
        try:
            v["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:
            pass
        # distributions, not modules: flash-attn 2 and 4 share the 'flash_attn' package name
        from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

        for dist in ("flash-attn", "flash-attn-3", "flash-attn-4", "nvidia-cutlass-dsl", "triton"):
            try:
                v[dist] = version(dist)
            except PackageNotFoundError:
                pass
        v["visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES", "(all)")
        return v
