"""How Cosmos-Predict2 is parallelised, as data (applied by phyx.parallel).

TP: attention heads and the MLP hidden dim split across ranks: to_q / to_k / to_v column-parallel
(cross-attention's to_k / to_v read the replicated text), to_out.0 and ff.net.2 row-parallel,
ff.net.0.proj column-parallel. The QK RMSNorm is per head (over head_dim), so it needs no
communication and stays replicated; AdaLN-LoRA, time embedding and the final layer are replicated.

SP: the patch tokens [B, L, C] are sharded along dim 1; the per-frame adaLN values stay per
frame and are looked up per token through each token's frame index, sharded like the tokens
(dim 0); the RoPE table is padded and sliced like the tokens; self-attention (attn1) spans the
whole sequence, cross-attention (attn2) reads the replicated text; the output is gathered on dim 1.
"""
from phyx.parallel.sequence import SequencePlan
from phyx.parallel.styles import Colwise, Rowwise

TP_PLAN = {
    **{f"transformer_blocks.*.{a}.{p}": Colwise() for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v")},
    "transformer_blocks.*.attn1.to_out.0": Rowwise(),
    "transformer_blocks.*.attn2.to_out.0": Rowwise(),
    "transformer_blocks.*.ff.net.0.proj": Colwise(),
    "transformer_blocks.*.ff.net.2": Rowwise(),
}

SP_PLAN = SequencePlan(
    shard={"tokens": 1, "frame_index": 0},
    rope=True,
    attention=("transformer_blocks.*.attn1",),
    gather={"out": 1},
)
