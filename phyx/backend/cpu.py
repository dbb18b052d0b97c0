"""The CPU backend: the reference. Its 'fast' kernels are torch's own fused CPU paths."""
from __future__ import annotations

import platform

import torch
import torch.nn.functional as F

from phyx.backend.base import Backend, DeviceModule, Kernel, OpSupport
from phyx.kernels.attention_adapter import contract_attention, fold_causal
from phyx.kernels.spec import ATTENTION_FEATURES, Feature

_FLOATS = frozenset({torch.float32, torch.float16, torch.bfloat16, torch.float64})


def _sdpa_core(q, k, v, mask, is_causal, scale, return_lse):
    """torch SDPA in B S N D; the shared adapter does kv_lens, dead rows and the refusals (SDPA has
    no lse and no q_lens here: refused, not dropped)."""
    if is_causal and mask is not None:  # SDPA refuses both together
        mask, is_causal = fold_causal(mask, q.shape[1], k.shape[1]), False
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=mask, is_causal=is_causal, scale=scale,
                                         enable_gqa=q.shape[2] != k.shape[2])
    return out.transpose(1, 2)


SDPA_SUPPORT = OpSupport(_FLOATS, ATTENTION_FEATURES - {Feature.LSE, Feature.Q_LENS})
sdpa_attention = contract_attention(_sdpa_core, SDPA_SUPPORT, "torch.sdpa")


class CpuBackend(Backend):
    name = "cpu"
    device_type = "cpu"
    dist_backend = "gloo"
    visible_devices_env = None
    priority = 0
    host_env_vars = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

    def __init__(self):
        self.device = DeviceModule()

    def kernels(self):
        return [Kernel("attention", "torch.sdpa", sdpa_attention, SDPA_SUPPORT, "fast",
                       "torch scaled_dot_product_attention on the CPU")]

    def set_reduced_precision_matmul(self, allowed):
        return {}

    def describe_devices(self):
        return [f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"]
