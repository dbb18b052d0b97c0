"""The CPU backend: the reference. Its 'fast' kernels are torch's own fused CPU paths."""
from __future__ import annotations

import platform

import torch
import torch.nn.functional as F

from phyx.backend.base import Backend, DeviceModule, Kernel, OpSupport
from phyx.kernels.spec import ATTENTION_FEATURES

_FLOATS = frozenset({torch.float32, torch.float16, torch.bfloat16, torch.float64})


def sdpa_attention(q, k, v, attn_mask, kv_lens, q_lens, is_causal, scale, return_lse):
    """torch SDPA in B S N D. kv_lens are honoured by slicing K/V per batch element (no dense
    mask); features SDPA lacks (lse, q_lens) are refused, not dropped."""
    if return_lse:
        SDPA_SUPPORT.require("torch.sdpa", "lse")
    if q_lens is not None:
        SDPA_SUPPORT.require("torch.sdpa", "q_lens")
    enable_gqa = q.shape[2] != k.shape[2]
    if kv_lens is None:
        return _sdpa(q, k, v, attn_mask, is_causal, scale, enable_gqa)
    outs = []
    lens = kv_lens.tolist()
    if len(set(lens)) == 1 and attn_mask is None:
        n = int(lens[0])
        return _sdpa(q, k[:, :n], v[:, :n], None, is_causal, scale, enable_gqa)
    for b, n in enumerate(lens):
        m = None
        if attn_mask is not None:
            m = attn_mask[b:b + 1] if attn_mask.dim() == 4 and attn_mask.shape[0] > 1 else attn_mask
            m = m[..., :int(n)]
        outs.append(_sdpa(q[b:b + 1], k[b:b + 1, :int(n)], v[b:b + 1, :int(n)], m, is_causal, scale,
                          enable_gqa))
    return torch.cat(outs, dim=0)


def _sdpa(q, k, v, mask, is_causal, scale, enable_gqa):
    if is_causal and mask is not None:
        # SDPA refuses both; fold causal (top-left) into the mask.
        sq, sk = q.shape[1], k.shape[1]
        causal = torch.ones(sq, sk, dtype=torch.bool, device=q.device).tril()
        mask = (mask & causal) if mask.dtype == torch.bool else mask.masked_fill(~causal, float("-inf"))
        is_causal = False
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=mask, is_causal=is_causal, scale=scale,
                                         enable_gqa=enable_gqa)
    return out.transpose(1, 2)


SDPA_SUPPORT = OpSupport(_FLOATS, ATTENTION_FEATURES - {"lse", "q_lens"})


class CpuBackend(Backend):
    name = "cpu"
    device_type = "cpu"
    dist_backend = "gloo"
    visible_devices_env = None
    priority = 0

    def __init__(self):
        self.device = DeviceModule()

    def kernels(self):
        return [Kernel("attention", "torch.sdpa", sdpa_attention, SDPA_SUPPORT, "fast",
                       "torch scaled_dot_product_attention on the CPU")]

    def set_reduced_precision_matmul(self, allowed):
        return {}

    def describe_devices(self):
        return [f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"]
