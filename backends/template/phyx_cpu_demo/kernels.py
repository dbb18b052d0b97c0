"""The kernels this vendor registers. Each must match phyx/ops/reference.py exactly and
declare what it supports; anything else must raise UnsupportedArgumentError, never be
dropped."""
from __future__ import annotations

import torch

from phyx.backend.base import Kernel, OpSupport

RMS_SUPPORT = OpSupport(frozenset({torch.float32, torch.bfloat16, torch.float16}),
                        frozenset({"weight"}))
CALLS = {"rms_norm": 0}   # lets the template's test see that this kernel really ran


def rms_norm(x, weight=None, eps=1e-6):
    """One-pass RMSNorm with the reference's rounding order (fp32 normalise, round, * weight)."""
    RMS_SUPPORT.require_dtype("cpu-demo.rms_norm", x.dtype)
    CALLS["rms_norm"] += 1
    xf = x.float()
    y = (xf * (xf.square().mean(-1, keepdim=True) + eps).rsqrt()).to(x.dtype)
    return y if weight is None else y * weight


KERNELS = [Kernel("rms_norm", "cpu-demo.rms_norm", rms_norm, RMS_SUPPORT, "fast",
                  "demo vendor's RMSNorm")]
