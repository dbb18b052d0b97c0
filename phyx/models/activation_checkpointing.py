"""Activation checkpointing for the DiT block loops: recompute each block in backward instead of
keeping its activations, so training steps of the 14B-class models fit one device. Vendor-free
(torch.utils.checkpoint runs on every backend); off by default and a no-op without grad."""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def run_block(fn, enabled: bool, *args):
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


class CheckpointingMixin:
    """Adds `gradient_checkpointing` and the diffusers-style switch to a model."""

    gradient_checkpointing = False

    def enable_gradient_checkpointing(self, enabled: bool = True):
        self.gradient_checkpointing = bool(enabled)
        return self
