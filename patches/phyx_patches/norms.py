"""apex and transformer_engine norm modules served by phyx.ops.rms_norm / layer_norm.

apex's and TE's fused norms compute in fp32, apply gamma in fp32 and round once to the
input dtype. phyx.ops.rms_norm rounds before the weight (upstream Wan's order), so the
shim feeds it fp32 and rounds the result itself: the shim keeps apex/TE numerics."""
from __future__ import annotations

import numbers

import torch
from torch import nn

from phyx.errors import UnsupportedArgumentError


def _shape(normalized_shape) -> tuple[int, ...]:
    if isinstance(normalized_shape, numbers.Integral):
        return (int(normalized_shape),)
    return tuple(int(s) for s in normalized_shape)


def _flat(x, shape):
    """Normalise over the last len(shape) dims: flatten them into one."""
    if x.shape[-len(shape):] != torch.Size(shape):
        raise UnsupportedArgumentError(f"norm over normalized_shape={shape} got input {tuple(x.shape)}")
    return x.reshape(*x.shape[:-len(shape)], -1) if len(shape) > 1 else x


def rms_norm_fp32(x, weight, shape, eps):
    import phyx.ops

    xf = _flat(x, shape).float()
    w = weight.float().reshape(-1) if weight is not None else None
    return phyx.ops.rms_norm(xf, w, eps).to(x.dtype).reshape(x.shape)


def layer_norm_fp32(x, weight, bias, shape, eps):
    import phyx.ops

    xf = _flat(x, shape)
    w = weight.reshape(-1) if weight is not None else None
    b = bias.reshape(-1) if bias is not None else None
    return phyx.ops.layer_norm(xf, w, b, eps).reshape(x.shape)


def _factory_kwargs(device, dtype):
    from phyx_patches._device import translate

    return {"device": translate(device) if device is not None else None, "dtype": dtype}


# --- apex.normalization ----------------------------------------------------------------------
class FusedRMSNorm(nn.Module):
    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, memory_efficient=False):
        super().__init__()
        self.normalized_shape = _shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(self.normalized_shape))
        else:
            self.register_parameter("weight", None)

    def forward(self, x):
        return rms_norm_fp32(x, self.weight, self.normalized_shape, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class FusedLayerNorm(nn.Module):
    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, memory_efficient=False):
        super().__init__()
        self.normalized_shape = _shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(self.normalized_shape))
            self.bias = nn.Parameter(torch.zeros(self.normalized_shape))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x):
        return layer_norm_fp32(x, self.weight, self.bias, self.normalized_shape, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


# --- transformer_engine.pytorch --------------------------------------------------------------
def _te_common(sequence_parallel, kwargs, cls):
    if sequence_parallel:
        raise UnsupportedArgumentError(
            f"transformer_engine {cls}(sequence_parallel=True) marks weights for Megatron's "
            f"sequence-parallel gradient reduction, which phyx does not do; pass False")
    bad = {k for k, v in kwargs.items() if v not in (None, False)}
    if bad:
        raise UnsupportedArgumentError(f"transformer_engine {cls} arguments {sorted(bad)} are not "
                                       f"served by the phyx_patches shim")


class TERMSNorm(nn.Module):
    """transformer_engine.pytorch.RMSNorm: weight [hidden]; zero_centered_gamma -> (1 + weight)."""

    def __init__(self, normalized_shape, eps=1e-5, sequence_parallel=None, params_dtype=None,
                 zero_centered_gamma=False, device="cuda", **kwargs):
        super().__init__()
        _te_common(sequence_parallel, kwargs, "RMSNorm")
        self.normalized_shape = _shape(normalized_shape)
        self.eps = eps
        self.zero_centered_gamma = zero_centered_gamma
        init = torch.zeros if zero_centered_gamma else torch.ones
        self.weight = nn.Parameter(init(self.normalized_shape,
                                        **_factory_kwargs(device, params_dtype or torch.float32)))

    def forward(self, x):
        w = self.weight + 1 if self.zero_centered_gamma else self.weight
        return rms_norm_fp32(x, w, self.normalized_shape, self.eps)


class TELayerNorm(nn.Module):
    def __init__(self, normalized_shape, eps=1e-5, sequence_parallel=None, params_dtype=None,
                 zero_centered_gamma=False, device="cuda", **kwargs):
        super().__init__()
        _te_common(sequence_parallel, kwargs, "LayerNorm")
        self.normalized_shape = _shape(normalized_shape)
        self.eps = eps
        self.zero_centered_gamma = zero_centered_gamma
        fk = _factory_kwargs(device, params_dtype or torch.float32)
        init = torch.zeros if zero_centered_gamma else torch.ones
        self.weight = nn.Parameter(init(self.normalized_shape, **fk))
        self.bias = nn.Parameter(torch.zeros(self.normalized_shape, **fk))

    def forward(self, x):
        w = self.weight + 1 if self.zero_centered_gamma else self.weight
        return layer_norm_fp32(x, w, self.bias, self.normalized_shape, self.eps)
