"""Port driver: Tencent/HunyuanVideo's HYVideoDiffusionTransformer, upstream files unedited.

    phyx port run benchmarks/porting/hunyuanvideo.py --path CHECKOUT --backend npu-emulated

Tiny config (hidden 64, 2 heads, 1 double + 1 single block), weights re-drawn at random. Its
attention calls flash_attn_varlen_func (served by the flash_attn shim), get_cu_seqlens allocates
on 'cuda' (torch_cuda shim); RoPE tables come from upstream's own get_nd_rotary_pos_embed."""
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import randn, redraw  # noqa: E402

from phyx.tools.porting.imports import import_bare  # noqa: E402

CFG = dict(patch_size=[1, 2, 2], in_channels=4, out_channels=4, hidden_size=64, heads_num=2,
           mlp_width_ratio=2.0, mm_double_blocks_depth=1, mm_single_blocks_depth=1,
           rope_dim_list=[8, 12, 12], guidance_embed=True)
LATENT = (1, 4, 3, 8, 8)     # B C T H W -> 3 x 4 x 4 = 48 tokens
TEXT_LEN, TEXT_DIM, TEXT_DIM2 = 7, 32, 16


def build():
    models = import_bare("hyvideo.modules.models")
    args = types.SimpleNamespace(text_states_dim=TEXT_DIM, text_states_dim_2=TEXT_DIM2)
    torch.manual_seed(0)
    return redraw(models.HYVideoDiffusionTransformer(args, **CFG))


def inputs(seed):
    mask = torch.ones(1, TEXT_LEN, dtype=torch.long)
    mask[:, 5:] = 0                               # two padded text tokens
    return {"x": randn(*LATENT, seed=seed), "t": torch.tensor([700.0]),
            "text_states": randn(1, TEXT_LEN, TEXT_DIM, seed=seed + 1),
            "text_mask": mask, "text_states_2": randn(1, TEXT_DIM2, seed=seed + 2),
            "guidance": torch.tensor([4000.0])}


def forward(model, inp):
    pos = import_bare("hyvideo.modules.posemb_layers")
    _, _, t, h, w = inp["x"].shape
    cos, sin = pos.get_nd_rotary_pos_embed(CFG["rope_dim_list"], (t, h // 2, w // 2),
                                           use_real=True, theta=256)
    dev, dt = inp["x"].device, inp["x"].dtype
    return model(**inp, freqs_cos=cos.to(dev, dt), freqs_sin=sin.to(dev, dt), return_dict=False)
