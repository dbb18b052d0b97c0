"""Port driver: Open-Sora's MMDiT blocks with upstream's non-Liger RoPE (EmbedND), which builds
its tables in float64 on the activations' device: the run-time trap the report must show.

    phyx port run benchmarks/porting/open_sora_rope64.py --path CHECKOUT --backend npu-emulated"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import open_sora as base  # noqa: E402

from phyx.tools.porting.imports import import_bare  # noqa: E402

inputs = base.inputs


def build():
    layers = import_bare("opensora.models.mmdit.layers")
    model = base.build()
    model.pe_embedder = layers.EmbedND(dim=base.HIDDEN // base.HEADS, theta=10000, axes_dim=base.AXES)
    torch.manual_seed(0)
    return model
