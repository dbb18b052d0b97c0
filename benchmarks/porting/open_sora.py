"""Port driver: hpcaitech/Open-Sora (2.0) MMDiT blocks, upstream files unedited.

    phyx port run benchmarks/porting/open_sora.py --path CHECKOUT --backend npu-emulated

Upstream's model.py imports mmengine and colossalai (registry, checkpoint IO) that the DiT's
compute does not need, so this driver imports only opensora/models/mmdit/layers.py (and the
math.py it imports) and composes its DoubleStreamBlock / SingleStreamBlock / LastLayer /
LigerEmbedND / MLPEmbedder as MMDiTModel.forward does. layers.py imports liger_kernel (RMSNorm,
RoPE: liger_kernel shim) and flash_attn (flash_attn shim); timestep_embedding is wrapped in
torch.compile (port run runs it eagerly). Tiny config, weights re-drawn at random."""
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import randn, redraw  # noqa: E402

from phyx.tools.porting.imports import import_bare  # noqa: E402

HIDDEN, HEADS, AXES, IN_CH, CTX, VEC = 64, 2, [8, 12, 12], 16, 24, 16
T, H, W, TXT = 2, 4, 4, 5


class TinyMMDiT(nn.Module):
    """MMDiTModel's forward, composed from upstream's layers.py blocks."""

    def __init__(self, L):
        super().__init__()
        self.timestep_embedding = L.timestep_embedding
        self.pe_embedder = L.LigerEmbedND(dim=HIDDEN // HEADS, theta=10000, axes_dim=AXES)
        self.img_in = nn.Linear(IN_CH, HIDDEN)
        self.time_in = L.MLPEmbedder(256, HIDDEN)
        self.vector_in = L.MLPEmbedder(VEC, HIDDEN)
        self.txt_in = nn.Linear(CTX, HIDDEN)
        self.double_blocks = nn.ModuleList([L.DoubleStreamBlock(HIDDEN, HEADS, 2.0, qkv_bias=True)])
        self.single_blocks = nn.ModuleList([L.SingleStreamBlock(HIDDEN, HEADS, 2.0)])
        self.final_layer = L.LastLayer(HIDDEN, 1, IN_CH)

    def forward(self, img, img_ids, txt, txt_ids, timesteps, y_vec):
        img = self.img_in(img)
        vec = self.time_in(self.timestep_embedding(timesteps, 256)) + self.vector_in(y_vec)
        txt = self.txt_in(txt)
        pe = self.pe_embedder(torch.cat((txt_ids, img_ids), dim=1))
        for block in self.double_blocks:
            img, txt = block(img, txt, vec, pe)
        x = torch.cat((txt, img), 1)
        for block in self.single_blocks:
            x = block(x, vec, pe)
        return self.final_layer(x[:, txt.shape[1]:], vec)


def build():
    layers = import_bare("opensora.models.mmdit.layers")
    torch.manual_seed(0)
    return redraw(TinyMMDiT(layers))


def inputs(seed):
    t, h, w = torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij")
    img_ids = torch.stack([t, h, w], -1).reshape(1, -1, 3).float()
    return {"img": randn(1, T * H * W, IN_CH, seed=seed), "img_ids": img_ids,
            "txt": randn(1, TXT, CTX, seed=seed + 1), "txt_ids": torch.zeros(1, TXT, 3),
            "timesteps": torch.tensor([0.6]), "y_vec": randn(1, VEC, seed=seed + 2)}
