"""How Cosmos3 is parallelised, as data (applied by phyx.parallel).

TP: both towers split their query and KV heads (tp must divide the KV heads: whole KV heads per
rank) and their MLPs: the q/k/v projections of the understanding tower (to_q/to_k/to_v) and of
the generation tower (add_q_proj/add_k_proj/add_v_proj) are column-parallel, their output
projections (to_out, to_add_out) row-parallel; gate_proj (SwiGLU only) and up_proj column-,
down_proj row-parallel. The QK RMSNorms are per head and stay replicated.

SP: two sequences, each sharded on its own: the text tokens (understanding tower, causal
attention) and the media tokens (generation tower). The generation attention is two-sequence:
the media queries attend to [text K/V, media K/V]; the text K/V are kept, per layer, as the whole
text sequence on this rank's head group (SequenceParallel.full_heads) and attended as a prefix
of the sharded media keys. Both sequences are gathered at the end of their tower.
"""
from phyx.parallel.sequence import SequencePlan
from phyx.parallel.styles import Colwise, Rowwise

_ATTN = "layers.*.self_attn."
TP_PLAN = {
    **{_ATTN + p: Colwise() for p in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj")},
    _ATTN + "to_out": Rowwise(),
    _ATTN + "to_add_out": Rowwise(),
    **{f"layers.*.{m}.gate_proj": Colwise(optional=True) for m in ("mlp", "mlp_moe_gen")},   # SwiGLU only
    **{f"layers.*.{m}.up_proj": Colwise() for m in ("mlp", "mlp_moe_gen")},
    **{f"layers.*.{m}.down_proj": Rowwise() for m in ("mlp", "mlp_moe_gen")},
}

SP_PLAN = SequencePlan(
    shard={"text": 1, "media": 1},          # two sequences, each through its own SequenceParallel
    rope=True,
    attention=("layers.*.self_attn",),      # und: causal over the text; gen: media over [text, media]
    gather={"text": 1, "media": 1},
)
