"""Port driver: rhymes-ai/Allegro's AllegroTransformer3DModel, upstream files unedited.

    phyx port run benchmarks/porting/allegro.py --path CHECKOUT --backend npu-emulated

Tiny config (2 heads x 24, 2 blocks, 3-D RoPE, ada_norm_single, cross-attention to a 6-token
caption with 2 padded tokens), weights re-drawn at random. Its attention is SDPA inside
sdpa_kernel(FLASH_ATTENTION / EFFICIENT_ATTENTION) (CUDA-only choices: the torch_cuda shim
keeps a kernel); --sdpa routes it through phyx.ops.attention."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import randn, redraw  # noqa: E402

from phyx.tools.porting.imports import import_bare  # noqa: E402

CFG = dict(num_attention_heads=2, attention_head_dim=24, in_channels=4, out_channels=4,
           num_layers=2, cross_attention_dim=48, attention_bias=True, sample_size=(8, 8),
           sample_size_t=2, patch_size=2, patch_size_t=1, activation_fn="gelu-approximate",
           norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
           caption_channels=32, interpolation_scale_h=2.0, interpolation_scale_w=2.0,
           interpolation_scale_t=2.2, use_additional_conditions=False, use_rope=True,
           model_max_length=6)
LATENT = (1, 4, 2, 8, 8)     # B C T H W -> 2 x 4 x 4 = 32 tokens


def build():
    m = import_bare("allegro.models.transformers.transformer_3d_allegro")
    torch.manual_seed(0)
    return redraw(m.AllegroTransformer3DModel(**CFG))


def inputs(seed):
    mask = torch.ones(1, 1, 6)
    mask[..., 4:] = 0
    return {"hidden_states": randn(*LATENT, seed=seed), "timestep": torch.tensor([700]),
            "encoder_hidden_states": randn(1, 1, 6, CFG["caption_channels"], seed=seed + 1),
            "encoder_attention_mask": mask,
            # upstream only defines its video mask when this 4-D mask is given
            "attention_mask": torch.ones(1, LATENT[2], LATENT[3], LATENT[4])}


def forward(model, inp):
    return model(**inp, return_dict=False)[0]
