"""Install the apex and transformer_engine stand-ins into sys.modules."""
from __future__ import annotations

from phyx_patches._fake_module import make_module
from phyx_patches.norms import FusedLayerNorm, FusedRMSNorm, TELayerNorm, TERMSNorm
from phyx_patches.rope import RotaryPositionEmbedding, apply_rotary_pos_emb

APEX_SERVES = "apex.normalization.FusedRMSNorm, FusedLayerNorm"
TE_SERVES = ("transformer_engine.pytorch.RMSNorm, LayerNorm, RotaryPositionEmbedding, "
             "attention.apply_rotary_pos_emb")


def install_apex(layer) -> None:
    norms = {"FusedRMSNorm": FusedRMSNorm, "FusedLayerNorm": FusedLayerNorm}
    fln = make_module("apex.normalization.fused_layer_norm", dict(norms),
                      "phyx_patches: apex fused norms", APEX_SERVES, package=False)
    normalization = make_module("apex.normalization", {**norms, "fused_layer_norm": fln},
                                "phyx_patches: apex.normalization", APEX_SERVES)
    apex = make_module("apex", {"normalization": normalization}, "phyx_patches: apex", APEX_SERVES)
    for name, mod in (("apex", apex), ("apex.normalization", normalization),
                      ("apex.normalization.fused_layer_norm", fln)):
        layer.set_module(name, mod)


def install_transformer_engine(layer) -> None:
    rope = {"RotaryPositionEmbedding": RotaryPositionEmbedding,
            "apply_rotary_pos_emb": apply_rotary_pos_emb}
    rope_mod = make_module("transformer_engine.pytorch.attention.rope", dict(rope),
                           "phyx_patches: TE rope", TE_SERVES, package=False)
    attention = make_module("transformer_engine.pytorch.attention", {**rope, "rope": rope_mod},
                            "phyx_patches: TE attention helpers", TE_SERVES)
    pytorch = make_module("transformer_engine.pytorch",
                          {"RMSNorm": TERMSNorm, "LayerNorm": TELayerNorm, **rope,
                           "attention": attention}, "phyx_patches: transformer_engine.pytorch",
                          TE_SERVES)
    te = make_module("transformer_engine", {"pytorch": pytorch, "__version__": "1.99+phyx"},
                     "phyx_patches: transformer_engine", TE_SERVES)
    for name, mod in (("transformer_engine", te), ("transformer_engine.pytorch", pytorch),
                      ("transformer_engine.pytorch.attention", attention),
                      ("transformer_engine.pytorch.attention.rope", rope_mod)):
        layer.set_module(name, mod)
