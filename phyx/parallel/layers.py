"""Tensor-parallel layers. Each rank holds its slice of every weight, marked with a
phyx.sharding.ShardSpec so the checkpoint loader reads only that slice from disk.

With tp_size == 1 they are plain nn.Linear (same parameter names, same math), so one model
definition serves single-device and TP runs.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import phyx.ops as ops
from phyx import comm
from phyx.errors import ParallelConfigError
from phyx.parallel.state import ParallelConfig, ParallelState, check_layout, get_parallel_state
from phyx.sharding import ShardSpec, mark


def _tp(state: ParallelState | None) -> ParallelState:
    return state if state is not None else get_parallel_state()


def _check_sections(out_features: int, sections, tp: int, what: str) -> tuple[int, ...]:
    secs = tuple(sections) if sections else (out_features,)
    if sum(secs) != out_features:
        raise ParallelConfigError(f"{what}: sections {secs} do not add up to {out_features}")
    for s in secs:
        if s % tp:
            raise ParallelConfigError(f"{what}: a section of size {s} does not split across tp={tp} "
                                      f"ranks (sections {secs})")
    return secs


class ColumnParallelLinear(nn.Linear):
    """y = x W^T + b with W's output rows split across TP ranks.

    `sections`: the output is a concatenation of parts each split evenly (fused QKV: (q, k, v)
    sizes; gated MLP: (ffn, ffn) for [gate | up]); every rank then holds [part0_r | part1_r | ...],
    so e.g. a local swiglu sees its own [gate_r | up_r]. gather_output=True returns the full
    output in the original (unsharded) order."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 gather_output: bool = False, sections=None, *, state: ParallelState | None = None,
                 device=None, dtype=None):
        st = _tp(state)
        self.tp_size, self.tp_rank, self.tp_group = st.tp_size, st.tp_rank, st.tp_group
        self.full_out_features = out_features
        self.sections = _check_sections(out_features, sections, self.tp_size,
                                         f"ColumnParallelLinear({in_features}, {out_features})")
        self.gather_output = gather_output
        local = out_features // self.tp_size
        super().__init__(in_features, local, bias=bias, device=device, dtype=dtype)
        if self.tp_size > 1:
            spec = ShardSpec(0, self.tp_rank, self.tp_size, self.sections if sections else None)
            mark(self.weight, spec)
            if self.bias is not None:
                mark(self.bias, spec)

    def forward(self, x):
        if self.tp_size > 1:
            x = comm.copy_to_group(x, self.tp_group)  # replicated input: its gradient sums over ranks
        y = F.linear(x, self.weight, self.bias)
        if self.tp_size == 1 or not self.gather_output:
            return y
        full = comm.all_gather(y, dim=-1, group=self.tp_group)  # [.. r0 | r1 | ..] per rank
        if len(self.sections) == 1:
            return full
        per_rank = full.chunk(self.tp_size, dim=-1)
        local_secs = [s // self.tp_size for s in self.sections]
        parts = [p.split(local_secs, dim=-1) for p in per_rank]
        return torch.cat([parts[r][i] for i in range(len(local_secs)) for r in range(self.tp_size)],
                         dim=-1)


class RowParallelLinear(nn.Linear):
    """y = x W^T + b with W's input columns split across TP ranks; the partial products are
    summed by one all-reduce, then the (replicated) bias is added once."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 input_is_parallel: bool = True, *, state: ParallelState | None = None,
                 device=None, dtype=None):
        st = _tp(state)
        self.tp_size, self.tp_rank, self.tp_group = st.tp_size, st.tp_rank, st.tp_group
        if in_features % self.tp_size:
            raise ParallelConfigError(f"RowParallelLinear: in_features {in_features} does not split "
                                      f"across tp={self.tp_size} ranks")
        self.full_in_features = in_features
        self.input_is_parallel = input_is_parallel
        super().__init__(in_features // self.tp_size, out_features, bias=bias, device=device,
                         dtype=dtype)
        if self.tp_size > 1:
            mark(self.weight, ShardSpec(1, self.tp_rank, self.tp_size))

    def forward(self, x):
        if self.tp_size == 1:
            return F.linear(x, self.weight, self.bias)
        if not self.input_is_parallel:
            # a replicated input cut to this rank's columns: its gradient is gathered back
            x = comm.copy_to_group(x, self.tp_group).chunk(self.tp_size, dim=-1)[self.tp_rank]
        y = comm.all_reduce(F.linear(x, self.weight), group=self.tp_group, inplace=True)
        return y + self.bias if self.bias is not None else y


class QKVParallelLinear(ColumnParallelLinear):
    """Fused [q | k | v] projection with GQA: query and KV heads split across TP ranks (rank r
    holds query heads r*Nq/tp.. and the KV heads they attend to)."""

    def __init__(self, hidden: int, num_heads: int, num_kv_heads: int | None = None,
                 head_dim: int | None = None, bias: bool = True, *,
                 state: ParallelState | None = None, device=None, dtype=None):
        st = _tp(state)
        nkv = num_heads if num_kv_heads is None else num_kv_heads
        head_dim = head_dim or hidden // num_heads
        tp = st.tp_size
        check_layout(num_heads, nkv, ParallelConfig(tp=tp), "QKVParallelLinear")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, nkv, head_dim
        self.local_heads, self.local_kv_heads = num_heads // tp, nkv // tp
        super().__init__(hidden, (num_heads + 2 * nkv) * head_dim, bias=bias,
                         sections=(num_heads * head_dim, nkv * head_dim, nkv * head_dim),
                         state=st, device=device, dtype=dtype)

    def split(self, y):
        """[.., (Nq_l + 2 Nkv_l) * D] -> q [.., Nq_l, D], k, v [.., Nkv_l, D]."""
        d = self.head_dim
        q, k, v = y.split([self.local_heads * d, self.local_kv_heads * d, self.local_kv_heads * d],
                          dim=-1)
        return (q.unflatten(-1, (self.local_heads, d)), k.unflatten(-1, (self.local_kv_heads, d)),
                v.unflatten(-1, (self.local_kv_heads, d)))


def tp_rms_norm(x_local, weight_local=None, eps: float = 1e-6, full_dim: int | None = None, *,
                state: ParallelState | None = None):
    """RMSNorm over a dim that TP splits (Wan's QK-norm over all heads): the sum of squares is
    all-reduced across the TP group. Same rounding order as phyx.ops.reference.rms_norm
    (normalise in fp32, round to x.dtype, then multiply by the weight)."""
    st = _tp(state)
    if st.tp_size == 1:
        return ops.rms_norm(x_local, weight_local, eps)
    full_dim = full_dim or x_local.shape[-1] * st.tp_size
    xf = x_local.float()
    # the statistics feed each rank's own heads (sharded), so their gradient sums over ranks
    sumsq = comm.all_reduce(xf.pow(2).sum(dim=-1, keepdim=True), group=st.tp_group, grad="sum")
    y = (xf * torch.rsqrt(sumsq / full_dim + eps)).to(x_local.dtype)
    return y * weight_local if weight_local is not None else y


class TPRMSNorm(nn.Module):
    """RMSNorm over `dim` features that TP splits evenly (weight sharded like the features)."""

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = True, *,
                 state: ParallelState | None = None, device=None, dtype=None):
        super().__init__()
        st = _tp(state)
        if dim % st.tp_size:
            raise ParallelConfigError(f"TPRMSNorm: dim {dim} does not split across tp={st.tp_size}")
        self.state, self.dim, self.eps = st, dim, eps
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(dim // st.tp_size, device=device, dtype=dtype))
            if st.tp_size > 1:
                mark(self.weight, ShardSpec(0, st.tp_rank, st.tp_size))
        else:
            self.register_parameter("weight", None)

    def forward(self, x):
        return tp_rms_norm(x, self.weight, self.eps, self.dim, state=self.state)


def load_full_state_dict(module: nn.Module, full: dict, strict: bool = True) -> None:
    """Load a full (unsharded) state dict into a possibly sharded module: each parameter marked
    with a ShardSpec takes its slice. For tests and in-memory conversions; checkpoints on disk
    go through phyx.io.checkpoint.load_state, which reads only the slice."""
    from phyx.sharding import spec_of

    local = {}
    own = dict(module.named_parameters())
    own.update(dict(module.named_buffers()))
    for name, t in full.items():
        p = own.get(name)
        spec = spec_of(p) if p is not None else None
        local[name] = spec.take(t) if spec is not None else t
    return module.load_state_dict(local, strict=strict)
