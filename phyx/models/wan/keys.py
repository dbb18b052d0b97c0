"""Key names: official Wan checkpoints <-> diffusers' WanTransformer3DModel.

phyx's modules use the official names, so official keys map to themselves and diffusers keys
go through `diffusers_to_official`. The table is the one diffusers' own converter
(scripts/convert_wan_to_diffusers.py) encodes; note the swap of the two block norms:
official norm3 (affine, before cross attention) is diffusers' norm2, and official norm2 (no
parameters, before the FFN) is diffusers' norm3.
"""
from __future__ import annotations

import re

# (official, diffusers) name prefixes inside a block ("blocks.N.<here>")
_BLOCK = [
    ("self_attn.q.", "attn1.to_q."),
    ("self_attn.k.", "attn1.to_k."),
    ("self_attn.v.", "attn1.to_v."),
    ("self_attn.o.", "attn1.to_out.0."),
    ("self_attn.norm_q.", "attn1.norm_q."),
    ("self_attn.norm_k.", "attn1.norm_k."),
    ("cross_attn.q.", "attn2.to_q."),
    ("cross_attn.k.", "attn2.to_k."),
    ("cross_attn.v.", "attn2.to_v."),
    ("cross_attn.o.", "attn2.to_out.0."),
    ("cross_attn.norm_q.", "attn2.norm_q."),
    ("cross_attn.norm_k.", "attn2.norm_k."),
    ("cross_attn.k_img.", "attn2.add_k_proj."),
    ("cross_attn.v_img.", "attn2.add_v_proj."),
    ("cross_attn.norm_k_img.", "attn2.norm_added_k."),
    ("norm3.", "norm2."),
    ("ffn.0.", "ffn.net.0.proj."),
    ("ffn.2.", "ffn.net.2."),
    ("modulation", "scale_shift_table"),
]

# (official, diffusers) top-level prefixes
_TOP = [
    ("patch_embedding.", "patch_embedding."),
    ("text_embedding.0.", "condition_embedder.text_embedder.linear_1."),
    ("text_embedding.2.", "condition_embedder.text_embedder.linear_2."),
    ("time_embedding.0.", "condition_embedder.time_embedder.linear_1."),
    ("time_embedding.2.", "condition_embedder.time_embedder.linear_2."),
    ("time_projection.1.", "condition_embedder.time_proj."),
    ("head.head.", "proj_out."),
    ("head.modulation", "scale_shift_table"),
    ("img_emb.proj.0.", "condition_embedder.image_embedder.norm1."),
    ("img_emb.proj.1.", "condition_embedder.image_embedder.ff.net.0.proj."),
    ("img_emb.proj.3.", "condition_embedder.image_embedder.ff.net.2."),
    ("img_emb.proj.4.", "condition_embedder.image_embedder.norm2."),
]

# diffusers keys it ignores itself on load (an unused norm some converted checkpoints carry)
_DIFFUSERS_IGNORED = re.compile(r"\.attn2\.norm_added_q\.")
_BLOCK_RE = re.compile(r"^(blocks\.\d+\.)(.*)$")


def _translate(key: str, src: int, dst: int) -> str | None:
    m = _BLOCK_RE.match(key)
    prefix, rest, table = (m.group(1), m.group(2), _BLOCK) if m else ("", key, _TOP)
    for pair in table:
        if rest == pair[src] or (pair[src].endswith(".") and rest.startswith(pair[src])):
            return prefix + pair[dst] + rest[len(pair[src]):]
    return None


def diffusers_to_official(key: str) -> str | None:
    """diffusers key -> official (= phyx module) key; None for keys diffusers ignores too.
    A key with no rule is returned unchanged, so the strict check reports it as unexpected."""
    if _DIFFUSERS_IGNORED.search(key):
        return None
    out = _translate(key, 1, 0)
    return key if out is None else out


def official_to_diffusers(key: str) -> str:
    """official key -> diffusers key (unchanged when diffusers has no such parameter, e.g.
    LingBot-World's camera layers)."""
    out = _translate(key, 0, 1)
    return key if out is None else out
