"""The kernel contract: op names, policies, what a kernel declares it supports.

A leaf module: it imports nothing of phyx but the error types, so the backend registry and the op
dispatch table can both import it without a cycle."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from phyx.errors import UnsupportedArgumentError

OP_NAMES = ("attention", "rms_norm", "layer_norm", "rope", "modulate", "gated_residual",
            "norm_modulate", "gelu", "silu", "swiglu", "relu2")

ATTENTION_FEATURES = frozenset({"bool_mask", "additive_mask", "kv_lens", "q_lens", "causal",
                                "gqa", "lse", "scale"})

POLICIES = ("reference", "fast")


@dataclass(frozen=True)
class OpSupport:
    """What a kernel can do. `features` names optional arguments it honours."""

    dtypes: frozenset = frozenset({torch.float32, torch.float16, torch.bfloat16})
    features: frozenset = frozenset()
    backward: bool = True

    def require(self, kernel: str, feature: str) -> None:
        if feature not in self.features:
            raise UnsupportedArgumentError(
                f"kernel {kernel!r} does not support {feature!r} (it supports: "
                f"{sorted(self.features) or 'no optional features'}); use policy 'reference' "
                f"or pick another kernel with phyx.ops.use_kernel()"
            )

    def require_dtype(self, kernel: str, dtype: torch.dtype) -> None:
        if dtype not in self.dtypes:
            raise UnsupportedArgumentError(
                f"kernel {kernel!r} does not support dtype {dtype} (supported: "
                f"{sorted(str(d) for d in self.dtypes)})"
            )


@dataclass(frozen=True)
class Kernel:
    op: str
    name: str
    fn: Callable
    support: OpSupport = field(default_factory=OpSupport)
    policy: str = "fast"  # "reference" kernels are plain torch; "fast" are vendor kernels
    doc: str = ""
