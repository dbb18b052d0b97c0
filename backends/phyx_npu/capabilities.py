"""Which torch_npu fused ops exist on which Ascend SoC. Keyed by the SoC name the runtime
reports (torch_npu.npu.get_device_name()). Anything unknown falls back to phyx's reference
kernels (plain torch on the device).

Sources: the torch_npu 2.14 docs name A2 for npu_fusion_attention (v1; its v2 adds A3),
npu_fused_infer_attention_score (A2 + A3), npu_rotary_mul (A2 + A3) and npu_swiglu (A2 only);
npu_rms_norm and npu_gelu name no product. A3 gets the A2 list because CANN's aclnn pages
(FlashAttentionScore, SwiGlu, RmsNorm) list A3; confirm on the first A3 run."""
from __future__ import annotations

import re
from dataclasses import dataclass

FUSED_ALL = frozenset({"npu_fusion_attention", "npu_fused_infer_attention_score", "npu_rms_norm",
                       "npu_rotary_mul", "npu_swiglu", "npu_gelu"})

# (family, SoC-name pattern, fused ops, note). First match wins.
_FAMILIES = (
    ("A3", re.compile(r"^Ascend910_93"), FUSED_ALL, "Atlas A3 training/inference series"),
    # A2 starts at Ascend910B1 (torch_npu's SocVersion numbers it 220+, incl. Ascend910B4-1 =
    # Atlas 800I A2); the bare "Ascend910B" is a first-generation chip (numbered with 910A/ProB).
    ("A2", re.compile(r"^Ascend910B[1-4]"), FUSED_ALL, "Atlas A2 training series / Atlas 800I A2"),
    ("310P", re.compile(r"^Ascend310P"), frozenset({"npu_gelu"}),
     "Atlas inference series: no FA/FIA/rms_norm/swiglu in the docs; reference kernels"),
    ("910", re.compile(r"^Ascend910(A|B|ProA|ProB|PremiumA)?$"), frozenset({"npu_gelu"}),
     "Atlas training series (first generation): reference kernels except gelu"),
)


@dataclass(frozen=True)
class SocCapabilities:
    soc: str
    family: str
    fused_ops: frozenset
    note: str

    def has(self, op: str) -> bool:
        return op in self.fused_ops


def capabilities_for(soc: str) -> SocCapabilities:
    for family, pattern, ops, note in _FAMILIES:
        if pattern.match(soc or ""):
            return SocCapabilities(soc, family, ops, note)
    # Unknown chip: only npu_gelu, because torch's native gelu there ignores `approximate`.
    return SocCapabilities(soc or "unknown", "unknown", frozenset({"npu_gelu"}),
                           "SoC not in phyx's table: fused kernels off, reference kernels used")
