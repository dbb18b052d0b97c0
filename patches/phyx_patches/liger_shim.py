"""liger_kernel's Triton ops served by phyx.ops where phyx's contract covers them.

The real package asserts on libcuda at import. Served: RMSNorm (module and
LigerRMSNormFunction; `offset` as Gemma's weight + offset), LayerNorm, rotate-half RoPE
(liger_rotary_pos_emb / LigerRopeFunction, HF layout [B, H, S, D] with cos/sin [.., S, D]),
SwiGLU and GEGLU products (LigerSiLUMulFunction, LigerGELUMulFunction, LigerSwiGLUMLP,
LigerGEGLUMLP). Fused losses (cross entropy, JSD, ...) and anything else: a clear
AttributeError from the stand-in module naming what is served. Numerics follow phyx's ops (fp32
compute, one rounding), not Liger's casting modes."""
from __future__ import annotations

import torch
from torch import nn

from phyx.errors import UnsupportedArgumentError

SERVES = ("LigerRMSNorm, LigerLayerNorm, liger_rotary_pos_emb, LigerSwiGLUMLP, LigerGEGLUMLP, "
          "ops: LigerRMSNormFunction, LigerRopeFunction, LigerSiLUMulFunction, LigerGELUMulFunction")


def _ops():
    import phyx.ops

    return phyx.ops


def rms_norm(x, weight, eps=1e-6, offset=0.0):
    w = weight if not offset else weight.float() + offset
    return _ops().rms_norm(x, w, eps)


def rope_half(q, k, cos, sin, unsqueeze_dim=1):
    """HF rotate-half RoPE on q, k [B, H, S, D]; cos/sin [S, D] or [B, S, D] (halves repeated)."""
    if unsqueeze_dim != 1:
        raise UnsupportedArgumentError(f"phyx_patches liger_kernel shim: unsqueeze_dim="
                                       f"{unsqueeze_dim}; only the [B, H, S, D] layout (1) is served")
    d = q.shape[-1] // 2
    c, s = cos[..., :d].float(), sin[..., :d].float()
    if c.dim() == 3 and c.shape[0] == 1:
        c, s = c[0], s[0]
    out = [_ops().rope(t.transpose(1, 2), c, s, style="half").transpose(1, 2) for t in (q, k)]
    return out[0], out[1]


def silu_mul(a, b):
    return _ops().swiglu(torch.cat([a, b], dim=-1))


def gelu_mul(a, b):
    return _ops().gelu(a, approximate="tanh") * b


class _Fn:
    """Stands in for a liger autograd Function: .apply(...) runs the phyx op (autograd through
    phyx's kernels)."""

    def __init__(self, fn):
        self.apply = fn


LigerRMSNormFunction = _Fn(lambda x, w, eps=1e-6, offset=0.0, casting_mode="llama",
                           in_place=False: rms_norm(x, w, eps, offset))
LigerRopeFunction = _Fn(lambda q, k, cos, sin, position_ids=None, unsqueeze_dim=1:
                        rope_half(q, k, cos, sin, unsqueeze_dim))
LigerSiLUMulFunction = _Fn(silu_mul)
LigerGELUMulFunction = _Fn(gelu_mul)


def liger_rotary_pos_emb(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
    return rope_half(q, k, cos, sin, unsqueeze_dim)


class LigerRMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6, offset=0.0, casting_mode="llama", init_fn="ones",
                 in_place=True, **kwargs):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size) if init_fn == "ones"
                                   else torch.zeros(hidden_size))
        self.variance_epsilon, self.offset = eps, offset

    def forward(self, x):
        return rms_norm(x, self.weight, self.variance_epsilon, self.offset)


class LigerLayerNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6, bias=False, init_fn="ones"):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size) if init_fn == "ones"
                                   else torch.zeros(hidden_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size)) if bias else None
        self.variance_epsilon = eps

    def forward(self, x):
        return _ops().layer_norm(x, self.weight, self.bias, self.variance_epsilon)


class _GatedMLP(nn.Module):
    act = staticmethod(silu_mul)

    def __init__(self, config):
        super().__init__()
        h, i = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x):
        return self.down_proj(type(self).act(self.gate_proj(x), self.up_proj(x)))


class LigerSwiGLUMLP(_GatedMLP):
    act = staticmethod(silu_mul)


class LigerGEGLUMLP(_GatedMLP):
    act = staticmethod(gelu_mul)


def install(layer) -> None:
    from phyx_patches._fake_module import make_module

    mods = {
        "liger_kernel.ops.rms_norm": {"LigerRMSNormFunction": LigerRMSNormFunction},
        "liger_kernel.ops.rope": {"LigerRopeFunction": LigerRopeFunction},
        "liger_kernel.ops.swiglu": {"LigerSiLUMulFunction": LigerSiLUMulFunction},
        "liger_kernel.ops.geglu": {"LigerGELUMulFunction": LigerGELUMulFunction},
        "liger_kernel.transformers.rms_norm": {"LigerRMSNorm": LigerRMSNorm},
        "liger_kernel.transformers.layer_norm": {"LigerLayerNorm": LigerLayerNorm},
        "liger_kernel.transformers.rope": {"liger_rotary_pos_emb": liger_rotary_pos_emb},
        "liger_kernel.transformers.swiglu": {"LigerSwiGLUMLP": LigerSwiGLUMLP},
        "liger_kernel.transformers.geglu": {"LigerGEGLUMLP": LigerGEGLUMLP},
    }
    made = {}
    for name, attrs in mods.items():
        made[name] = make_module(name, attrs, f"phyx_patches: {name}", SERVES, package=False)
    ops_attrs = {k.rsplit(".", 1)[1]: m for k, m in made.items() if ".ops." in k}
    tr_attrs = {k.rsplit(".", 1)[1]: m for k, m in made.items() if ".transformers." in k}
    flat_tr = {n: v for k, attrs in mods.items() if ".transformers." in k for n, v in attrs.items()}
    flat_ops = {n: v for k, attrs in mods.items() if ".ops." in k for n, v in attrs.items()}
    ops = make_module("liger_kernel.ops", {**ops_attrs, **flat_ops}, "phyx_patches: liger ops", SERVES)
    tr = make_module("liger_kernel.transformers", {**tr_attrs, **flat_tr},
                     "phyx_patches: liger transformers", SERVES)
    root = make_module("liger_kernel", {"ops": ops, "transformers": tr},
                       "phyx_patches: liger_kernel served by phyx.ops", SERVES)
    for name, mod in (("liger_kernel", root), ("liger_kernel.ops", ops),
                      ("liger_kernel.transformers", tr), *made.items()):
        layer.set_module(name, mod)
