"""The kernel contract: op names, policies, the optional features a kernel may honour, and what a
kernel declares it supports.

A leaf module: it imports nothing of phyx but the error types, so the backend registry and the op
dispatch table can both import it without a cycle."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Callable

import torch

from phyx.errors import UnsupportedArgumentError

OP_NAMES = ("attention", "rms_norm", "layer_norm", "rope", "modulate", "gated_residual",
            "norm_modulate", "gelu", "silu", "swiglu", "relu2")

POLICIES = ("reference", "fast")


class Feature(str, Enum):
    """An optional argument (or variant) a kernel honours. A str enum: each member equals and hashes
    as its value, so plug-ins that declare features as plain strings ("lse") keep working."""

    # attention
    BOOL_MASK = "bool_mask"
    ADDITIVE_MASK = "additive_mask"
    KV_LENS = "kv_lens"
    Q_LENS = "q_lens"
    CAUSAL = "causal"
    GQA = "gqa"
    LSE = "lse"
    SCALE = "scale"
    # norms
    WEIGHT = "weight"
    BIAS = "bias"
    # rope styles
    ROPE_ADJACENT = "adjacent"
    ROPE_HALF = "half"
    # gelu approximations
    GELU_EXACT = "none"
    GELU_TANH = "tanh"

    def __str__(self) -> str:
        return self.value


ATTENTION_FEATURES = frozenset({Feature.BOOL_MASK, Feature.ADDITIVE_MASK, Feature.KV_LENS,
                                Feature.Q_LENS, Feature.CAUSAL, Feature.GQA, Feature.LSE,
                                Feature.SCALE})


def as_feature(value) -> Feature:
    """Feature from a member or its string value; a clear error for anything else."""
    try:
        return Feature(value)
    except ValueError:
        raise UnsupportedArgumentError(
            f"unknown kernel feature {value!r}; features are {[f.value for f in Feature]} "
            f"(phyx.kernels.spec.Feature)") from None


@dataclass(frozen=True)
class OpSupport:
    """What a kernel can do. `features` names optional arguments it honours (Feature members or
    their string values; stored as Feature)."""

    dtypes: frozenset = frozenset({torch.float32, torch.float16, torch.bfloat16})
    features: frozenset = frozenset()
    backward: bool = True

    def __post_init__(self):
        object.__setattr__(self, "features", frozenset(as_feature(f) for f in self.features))

    def supports(self, feature) -> bool:
        return feature in self.features

    def require(self, kernel: str, feature) -> None:
        if feature not in self.features:
            raise UnsupportedArgumentError(
                f"kernel {kernel!r} does not support {str(feature)!r} (it supports: "
                f"{sorted(map(str, self.features)) or 'no optional features'}); use policy "
                f"'reference' or pick another kernel with phyx.ops.kernel_override()")

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
