"""How Wan is parallelised, as data (applied by phyx.parallel; the model code holds no TP wiring).

TP: attention heads and the FFN hidden dim split across ranks. q/k/v (and Wan2.1 i2v's k_img /
v_img) are column-parallel, o and the FFN's second linear row-parallel; the QK-norm is one
RMSNorm over all heads, so under TP its sum of squares is all-reduced (HeadShardedRMSNorm).
Everything else (embeddings, time MLP, modulation, LingBot's camera layers, the head) is
replicated.

SP: the patch tokens [B, L, C] are sharded along dim 1; per-token conditioning is sharded the
same way: Wan2.2 TI2V's per-token timesteps (when t is [B, L]) and LingBot-World's camera tokens;
the RoPE table is padded and sliced like the tokens; self-attention spans the whole sequence,
cross-attention reads the replicated text; the head output is gathered along dim 1.
"""
from phyx.parallel.sequence import SequencePlan
from phyx.parallel.styles import Colwise, HeadShardedRMSNorm, Rowwise

TP_PLAN = {
    "blocks.*.self_attn.q": Colwise(),
    "blocks.*.self_attn.k": Colwise(),
    "blocks.*.self_attn.v": Colwise(),
    "blocks.*.self_attn.o": Rowwise(),
    "blocks.*.self_attn.norm_q": HeadShardedRMSNorm(),
    "blocks.*.self_attn.norm_k": HeadShardedRMSNorm(),
    "blocks.*.cross_attn.q": Colwise(),
    "blocks.*.cross_attn.k": Colwise(),
    "blocks.*.cross_attn.v": Colwise(),
    "blocks.*.cross_attn.o": Rowwise(),
    "blocks.*.cross_attn.norm_q": HeadShardedRMSNorm(),
    "blocks.*.cross_attn.norm_k": HeadShardedRMSNorm(),
    "blocks.*.cross_attn.k_img": Colwise(optional=True),       # Wan2.1 i2v image branch
    "blocks.*.cross_attn.v_img": Colwise(optional=True),
    "blocks.*.cross_attn.norm_k_img": HeadShardedRMSNorm(optional=True),
    "blocks.*.ffn.0": Colwise(),
    "blocks.*.ffn.2": Rowwise(),
}

SP_PLAN = SequencePlan(
    shard={"tokens": 1, "timestep": 1, "camera": 1},   # per-token inputs, dim of the sequence
    rope=True,
    attention=("blocks.*.self_attn",),
    gather={"out": 1},
)
