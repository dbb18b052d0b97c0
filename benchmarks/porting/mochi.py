"""Port driver: genmoai/mochi's AsymmDiTJoint, upstream files unedited.

    phyx port run benchmarks/porting/mochi.py --path CHECKOUT/src --backend npu-emulated

Tiny config (x width 64, y width 32, 2 heads, 2 blocks; upstream asserts the visual MLP width
is 1536 * 8, so mlp_ratio_x = 192), weights re-drawn (pos_frequencies is torch.empty upstream).
Joint attention goes through flash_attn_varlen_func (flash_attn shim); attn_imports queries
torch.cuda.get_device_properties at import (torch_cuda shim). The packed indices the pipeline
builds (pipelines.py imports ray, T5 and the VAE) are built here from the text mask."""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import randn, redraw  # noqa: E402

from phyx.tools.porting.imports import import_bare  # noqa: E402

CFG = dict(patch_size=2, in_channels=4, hidden_size_x=64, hidden_size_y=32, depth=2,
           num_heads=2, mlp_ratio_x=192.0, mlp_ratio_y=4.0, t5_feat_dim=24, t5_token_length=6,
           attention_mode="flash", qk_norm=True)
LATENT = (1, 4, 2, 8, 8)      # B C T H W -> 2 x 4 x 4 = 32 visual tokens
VALID_TEXT = 4


def build():
    m = import_bare("genmo.mochi_preview.dit.joint_model.asymm_models_joint")
    torch.manual_seed(0)
    return redraw(m.AsymmDiTJoint(**CFG))


def packed_indices(text_mask: torch.Tensor, n_visual: int) -> dict:
    """Visual tokens first, then the valid text tokens, one packed sequence per batch item."""
    valid = torch.cat([torch.ones(text_mask.shape[0], n_visual, dtype=torch.bool), text_mask], 1)
    lens = valid.sum(1, dtype=torch.int32)
    return {"cu_seqlens_kv": F.pad(lens.cumsum(0, dtype=torch.int32), (1, 0)),
            "max_seqlen_in_batch_kv": int(lens.max()),
            "valid_token_indices_kv": valid.flatten().nonzero().flatten()}


def inputs(seed):
    mask = torch.zeros(1, CFG["t5_token_length"], dtype=torch.bool)
    mask[:, :VALID_TEXT] = True
    return {"x": randn(*LATENT, seed=seed), "sigma": torch.tensor([0.4]),
            "y_feat": [randn(1, CFG["t5_token_length"], CFG["t5_feat_dim"], seed=seed + 1)],
            "y_mask": [mask]}


def forward(model, inp):
    _, _, t, h, w = inp["x"].shape
    idx = packed_indices(inp["y_mask"][0].cpu(), t * h * w // CFG["patch_size"] ** 2)
    idx = {k: (v.to(inp["x"].device) if torch.is_tensor(v) else v) for k, v in idx.items()}
    return model(**inp, packed_indices=idx)
