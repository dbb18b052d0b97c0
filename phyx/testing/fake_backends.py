"""Fake backends for parity tests: a correct twin of cpu and backends with planted bugs. Each is
registered only for the duration of a test (monkeypatched registry)."""
from __future__ import annotations

import torch

import phyx.backend as reg
from phyx.backend.base import Kernel, OpSupport
from phyx.backend.cpu import CpuBackend
from phyx.kernels.spec import ATTENTION_FEATURES
from phyx.ops import reference


class CpuTwin(CpuBackend):
    """A second, correct backend: cpu under another name (stands in for 'the other machine')."""
    name = "cpu-twin"


def _attn_mask_not_inverted(q, k, v, attn_mask, kv_lens, q_lens, is_causal, scale, return_lse):
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = ~attn_mask  # the NPU trap: True means "masked out" there
    return reference.attention(q, k, v, attn_mask, kv_lens, q_lens, is_causal, scale, return_lse)


def _swiglu_up_gate(x):  # [up | gate] packing instead of [gate | up]
    up, gate = x.chunk(2, dim=-1)
    return torch.nn.functional.silu(gate) * up


class PlantedMask(CpuBackend):
    name = "planted-mask"
    emulated = True

    def kernels(self):
        return [Kernel("attention", "planted.mask_not_inverted", _attn_mask_not_inverted,
                       OpSupport(features=ATTENTION_FEATURES), "fast")]


class PlantedSwiglu(CpuBackend):
    name = "planted-swiglu"

    def kernels(self):
        return [Kernel("swiglu", "planted.up_gate", _swiglu_up_gate, OpSupport(), "fast")]


FAKES = {c.name: c for c in (CpuTwin, PlantedMask, PlantedSwiglu)}


def install(monkeypatch):
    """Register the fakes for one test (phyx.backend.EXTRA_BACKENDS, undone by monkeypatch)."""
    for name, cls in FAKES.items():
        monkeypatch.setitem(reg.EXTRA_BACKENDS, name, cls)
