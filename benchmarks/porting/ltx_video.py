"""Port driver: Lightricks/LTX-Video's Transformer3DModel, upstream files unedited.

    phyx port run benchmarks/porting/ltx_video.py --path CHECKOUT --backend npu-emulated

Tiny config (2 heads x 16, 2 blocks, RMSNorm standardisation, qk RMSNorm, RoPE, cross-attention
to a 6-token caption with 2 padded tokens), weights re-drawn at random. Its attention is plain
SDPA in its own processor: the report says how much of it reached the backend."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import randn, redraw  # noqa: E402

from phyx.tools.porting.imports import import_bare  # noqa: E402

CFG = dict(num_attention_heads=2, attention_head_dim=16, in_channels=8, out_channels=8,
           num_layers=2, cross_attention_dim=32, attention_bias=True,
           activation_fn="gelu-approximate", adaptive_norm="single_scale_shift",
           standardization_norm="rms_norm", norm_elementwise_affine=False, norm_eps=1e-6,
           caption_channels=24, qk_norm="rms_norm", positional_embedding_type="rope",
           positional_embedding_theta=10000.0, positional_embedding_max_pos=[20, 2048, 2048],
           timestep_scale_multiplier=1000)
T, H, W, TEXT = 2, 4, 4, 6


def build():
    t3d = import_bare("ltx_video.models.transformers.transformer3d")
    torch.manual_seed(0)
    return redraw(t3d.Transformer3DModel(**CFG))


def inputs(seed):
    n = T * H * W
    grid = torch.stack(torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W),
                                      indexing="ij")).reshape(1, 3, n).float()
    mask = torch.ones(1, TEXT)
    mask[:, 4:] = 0
    return {"hidden_states": randn(1, n, CFG["in_channels"], seed=seed), "indices_grid": grid,
            "encoder_hidden_states": randn(1, TEXT, CFG["caption_channels"], seed=seed + 1),
            "timestep": torch.tensor([0.7]), "encoder_attention_mask": mask}


def forward(model, inp):
    return model(**inp, return_dict=False)[0]
