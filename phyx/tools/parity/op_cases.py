"""Seeded op cases for op-level parity: every op in phyx.ops.OP_NAMES with odd shapes
(sequence lengths that are not powers of two, GQA ratios, masks with fully masked rows, kv_lens,
q_lens, causal, additive masks, lse).

Inputs are drawn on the CPU from a seed (the same seed gives different torch.randn on different
vendors), rounded to the tested dtype, then moved to the device; the float64 oracle runs
phyx.ops.reference on float64 copies of the *rounded* inputs, so input rounding is not counted as
kernel error.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from phyx.ops import rope_tables

_FLOAT_KEEP = ("cos", "sin")  # tables stay fp32 whatever the tested dtype (the op contract)


@dataclass(frozen=True)
class OpCase:
    op: str
    name: str
    build: Callable[[torch.Generator], tuple[tuple, dict]]  # fp32 tensors on the CPU
    outputs: tuple[str, ...] = ("out",)
    tol_scale: float = 1.0  # > 1 for ops that round several times in the tested dtype
    keep_fp32: tuple[str, ...] = field(default=_FLOAT_KEEP)

    @property
    def id(self) -> str:
        return f"{self.op}/{self.name}"


def _randn(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def _rand_mask(g, b, sq, skv, keep_p):
    return torch.rand(b, 1, sq, skv, generator=g) < keep_p


def _attn(g, b, sq, skv, nq, nkv, d):
    return _randn(g, b, sq, nq, d), _randn(g, b, skv, nkv, d), _randn(g, b, skv, nkv, d)


def _attention_cases() -> list[OpCase]:
    def gqa(g):
        return _attn(g, 2, 37, 37, 6, 2, 64), {}

    def cross(g):  # text cross-attention: Sq != Skv, no mask
        return _attn(g, 2, 29, 51, 4, 4, 64), {}

    def causal(g):
        return _attn(g, 2, 45, 45, 4, 4, 64), {"is_causal": True}

    def bool_mask(g):
        q, k, v = _attn(g, 2, 33, 47, 4, 2, 64)
        m = _rand_mask(g, 2, 33, 47, 0.7)
        m[0, :, 3] = False   # fully masked rows: output 0 by contract
        m[1, :, 10] = False
        return (q, k, v), {"attn_mask": m}

    def additive(g):
        q, k, v = _attn(g, 2, 39, 39, 4, 4, 64)
        m = _randn(g, 2, 1, 39, 39, scale=2.0)
        m = m.masked_fill(torch.rand(2, 1, 39, 39, generator=g) < 0.1, float("-inf"))
        m[..., 0] = 0.0  # keep every row partly open: fully masked additive rows are vendor-defined
        return (q, k, v), {"attn_mask": m}

    def kv_lens(g):
        q, k, v = _attn(g, 2, 35, 53, 6, 3, 64)
        return (q, k, v), {"kv_lens": torch.tensor([53, 31])}

    def causal_kv_lens(g):
        q, k, v = _attn(g, 2, 43, 43, 4, 2, 64)
        return (q, k, v), {"kv_lens": torch.tensor([43, 27]), "is_causal": True}

    def varlen(g):
        q, k, v = _attn(g, 2, 41, 41, 4, 4, 64)
        return (q, k, v), {"kv_lens": torch.tensor([41, 23]), "q_lens": torch.tensor([41, 23])}

    def lse(g):
        q, k, v = _attn(g, 2, 41, 41, 4, 2, 64)
        return (q, k, v), {"return_lse": True}

    def scale(g):
        return _attn(g, 1, 57, 57, 4, 4, 128), {"scale": 0.3}

    return [OpCase("attention", "gqa3_s37", gqa), OpCase("attention", "cross_29x51", cross),
            OpCase("attention", "causal_s45", causal),
            OpCase("attention", "bool_mask_masked_rows", bool_mask),
            OpCase("attention", "additive_mask", additive),
            OpCase("attention", "kv_lens_gqa2", kv_lens),
            OpCase("attention", "causal_kv_lens", causal_kv_lens),
            OpCase("attention", "varlen_q_kv_lens", varlen),
            OpCase("attention", "lse_gqa2", lse, outputs=("out", "lse")),
            OpCase("attention", "scale0.3_d128", scale)]


def _rope_case(name, style, angles_fn, batch_table):
    def build(g):
        angles = angles_fn()
        s = angles.shape[0]
        x = _randn(g, 2, s, 3, angles.shape[1] * 2)
        cos, sin = rope_tables.to_cos_sin(angles)
        if batch_table:  # per-sample tables [B, S, D/2] (e.g. per-token positions)
            cos, sin = cos[None].expand(2, -1, -1).contiguous(), sin[None].expand(2, -1, -1).contiguous()
        return (x, cos, sin), {"style": style}
    return OpCase("rope", name, build)


def op_cases() -> list[OpCase]:
    """All cases, in a stable order. Every op in phyx.ops.OP_NAMES has at least one."""
    c = _attention_cases()
    c += [
        OpCase("rms_norm", "per_head_w", lambda g: ((_randn(g, 2, 37, 4, 64), 1 + _randn(g, 64, scale=0.1)), {"eps": 1e-6})),
        OpCase("rms_norm", "all_heads_w", lambda g: ((_randn(g, 2, 37, 4 * 64), 1 + _randn(g, 256, scale=0.1)), {"eps": 1e-6})),
        OpCase("rms_norm", "no_weight", lambda g: ((_randn(g, 2, 41, 96, scale=3.0),), {"eps": 1e-5})),
        OpCase("layer_norm", "affine", lambda g: ((_randn(g, 2, 37, 96, scale=2.0) + 0.5, 1 + _randn(g, 96, scale=0.1), _randn(g, 96, scale=0.1)), {"eps": 1e-6})),
        OpCase("layer_norm", "no_affine", lambda g: ((_randn(g, 2, 37, 96),), {"eps": 1e-6})),
        _rope_case("wan3d_adjacent", "adjacent", lambda: rope_tables.wan_3d((3, 5, 7), 64), False),
        _rope_case("cosmos3d_half_btable", "half",
                   lambda: rope_tables.cosmos_predict2_3d((2, 3, 5), 64, (1.0, 2.0, 2.0)), True),
        OpCase("modulate", "bcast_b1c", lambda g: ((_randn(g, 2, 37, 96), _randn(g, 2, 1, 96, scale=0.5), _randn(g, 2, 1, 96, scale=0.3)), {}), tol_scale=2.0),
        OpCase("norm_modulate", "bcast_b1c", lambda g: ((_randn(g, 2, 37, 96, scale=2.0), _randn(g, 2, 1, 96, scale=0.5), _randn(g, 2, 1, 96, scale=0.3)), {}), tol_scale=2.0),
        OpCase("gated_residual", "bcast_gate", lambda g: ((_randn(g, 2, 37, 96), _randn(g, 2, 37, 96), _randn(g, 2, 1, 96, scale=0.5)), {}), tol_scale=2.0),
        OpCase("gelu", "exact", lambda g: ((_randn(g, 2, 37, 96, scale=3.0),), {"approximate": "none"})),
        OpCase("gelu", "tanh", lambda g: ((_randn(g, 2, 37, 96, scale=3.0),), {"approximate": "tanh"})),
        OpCase("silu", "s37", lambda g: ((_randn(g, 2, 37, 96, scale=3.0),), {})),
        OpCase("swiglu", "packed_gate_up", lambda g: ((_randn(g, 2, 37, 2 * 96, scale=2.0),), {}), tol_scale=2.0),
        OpCase("relu2", "s37", lambda g: ((_randn(g, 2, 37, 96, scale=2.0),), {})),
    ]
    return c


def case_seed(seed: int, case: OpCase) -> int:
    """A per-case seed independent of case order, so adding a case does not change the others."""
    return (seed * 1_000_003 + zlib.crc32(case.id.encode())) % (2 ** 63)


def _convert(x, dtype, keep_fp32: bool):
    if isinstance(x, torch.Tensor) and x.is_floating_point() and not keep_fp32:
        return x.to(dtype)
    return x


def make_inputs(case: OpCase, dtype: torch.dtype, seed: int = 0) -> tuple[tuple, dict]:
    """The case's inputs in `dtype` on the CPU (tables and masks kept as the contract says)."""
    g = torch.Generator().manual_seed(case_seed(seed, case))
    args, kwargs = case.build(g)
    arg_names = {"rope": ("x", "cos", "sin")}.get(case.op, ())
    args = tuple(_convert(a, dtype, i < len(arg_names) and arg_names[i] in case.keep_fp32)
                 for i, a in enumerate(args))
    kwargs = {k: _convert(v, dtype, k in case.keep_fp32) for k, v in kwargs.items()}
    return args, kwargs


def to_device(args, kwargs, device, dtype: torch.dtype | None = None):
    """Move (and optionally cast floating tensors of) a case's inputs."""
    def mv(x):
        if not isinstance(x, torch.Tensor):
            return x
        if dtype is not None and x.is_floating_point():
            x = x.to(dtype)
        return x.to(device)
    return tuple(mv(a) for a in args), {k: mv(v) for k, v in kwargs.items()}


def as_outputs(result) -> tuple[torch.Tensor, ...]:
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def _odd_len(g, lo=9, hi=80) -> int:
    """A sequence length in [lo, hi) that is not a power of two."""
    while True:
        n = int(torch.randint(lo, hi, (1,), generator=g))
        if n & (n - 1):
            return n


def random_cases(seed: int) -> list[OpCase]:
    """Shapes drawn from `seed`: odd sequence lengths, a random GQA ratio and head dim, a random
    bool mask with one fully masked row, random kv_lens; plus a norm and a RoPE case."""
    g = torch.Generator().manual_seed(10_007 + seed)
    sq, skv = _odd_len(g), _odd_len(g)
    nkv = int(torch.randint(1, 4, (1,), generator=g))
    nq = nkv * int(torch.randint(1, 5, (1,), generator=g))
    d = [32, 64, 80, 128][int(torch.randint(0, 4, (1,), generator=g))]
    b = int(torch.randint(1, 3, (1,), generator=g))
    lens = torch.randint(1, skv + 1, (b,), generator=g)
    causal = bool(torch.randint(0, 2, (1,), generator=g))
    sn = _odd_len(g)

    def attn_mask(gg):
        q, k, v = _attn(gg, b, sq, skv, nq, nkv, d)
        m = _rand_mask(gg, b, sq, skv, 0.6)
        m[:, :, sq // 2] = False
        return (q, k, v), {"attn_mask": m}

    def attn_lens(gg):
        q, k, v = _attn(gg, b, sq, sq if causal else skv, nq, nkv, d)
        kl = lens.clamp_max(sq) if causal else lens
        return (q, k, v), {"kv_lens": kl, "is_causal": causal}

    def norm(gg):
        return (_randn(gg, b, sn, nq * d), 1 + _randn(gg, nq * d, scale=0.1)), {"eps": 1e-6}

    def rope(gg):
        angles = rope_tables.wan_3d((1, 1, sn), d)
        cos, sin = rope_tables.to_cos_sin(angles)
        return (_randn(gg, b, sn, nq, d), cos, sin), {"style": "adjacent"}

    tag = f"r{seed}_b{b}_q{sq}_k{skv}_h{nq}x{nkv}_d{d}"
    return [OpCase("attention", f"{tag}_mask", attn_mask),
            OpCase("attention", f"{tag}_lens{'_causal' if causal else ''}", attn_lens),
            OpCase("rms_norm", f"r{seed}_s{sn}_c{nq * d}", norm),
            OpCase("rope", f"r{seed}_s{sn}_d{d}", rope)]
