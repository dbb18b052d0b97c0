"""Per-layer capture of TP / Ulysses-SP runs, merged back into full tensors, so a parallel run is
compared with a single-device run layer by layer (phyx.tools.parity.compare.compare_runs).

    merge = ParallelMerge(seq_len=45)            # inside every rank, after init_parallel(...)
    run = record_run(spec, None, "fp32", merge=merge)   # record_run binds the model

The merge runs inside the capture hooks on every rank in the same order (it uses collectives:
phyx.comm.all_gather for TP shards, phyx.parallel.sp_gather for sequence shards), so every rank
ends with the same full tensors.

- TP: which tensors are shards is read from the module, never guessed: a ColumnParallelLinear
  (gather_output=False) yields its output rows' slice (re-ordered per `sections`, as its own
  gather_output does); a RowParallelLinear (input_is_parallel) takes a slice of its input; a
  module whose 1-D weight is marked as a dim-0 shard (Wan's all-heads QK RMSNorm, TPRMSNorm)
  maps a feature slice to a feature slice.
- SP: a tensor is a sequence shard when its sequence axis has the local padded length
  ceil(seq_len / sp): dim 1 of [B, S, ...] tensors, dim 0 of [S, D/2] RoPE tables. Pass
  `seq_dim(layer, key, t) -> dim | None` where that rule is ambiguous (e.g. a text length equal to
  the local sequence length); the parity tests pick shapes where it is not.

Parallel runs are compared without replay: both sides run the same backend, so every layer
upstream of a layout bug agrees to fp32 rounding and the first failing layer in execution order is
the culprit. (Replaying single-device inputs under SP would need each layer's inputs split back
into shards; it is not needed for localisation here.)
"""
from __future__ import annotations

from typing import Callable

import torch

from phyx import comm


class ParallelMerge:
    def __init__(self, seq_len: int | None = None, seq_dim: Callable | None = None, state=None):
        from phyx.parallel import get_parallel_state, padded_len

        self.st = state if state is not None else get_parallel_state()
        self.seq_len = seq_len
        self.seq_dim = seq_dim
        sp = self.st.sp_size
        self.local_seq = padded_len(seq_len, sp) // sp if (sp > 1 and seq_len) else None
        if sp > 1 and not seq_len:
            raise ValueError("ParallelMerge under SP needs seq_len (the unpadded token count)")
        self.modules: dict = {}

    def bind(self, model: torch.nn.Module) -> "ParallelMerge":
        self.modules = dict(model.named_modules())
        return self

    # -- TP --
    def _tp_kind(self, layer: str, key: str):
        """'col' (output shard, maybe with sections) | 'feat' (feature shard) | None."""
        from phyx.parallel import ColumnParallelLinear, RowParallelLinear
        from phyx.sharding import spec_of

        # exact module records only: per-op records ('<module>/op:..') are not merged
        mod = self.modules.get(layer.split("#")[0])
        if mod is None or self.st.tp_size == 1:
            return None
        if isinstance(mod, ColumnParallelLinear):
            return "col" if key == "out" and not mod.gather_output and mod.tp_size > 1 else None
        if isinstance(mod, RowParallelLinear):
            return "feat" if key == "in.arg.0" and mod.input_is_parallel and mod.tp_size > 1 else None
        w = getattr(mod, "weight", None)
        spec = spec_of(w) if isinstance(w, torch.nn.Parameter) else None
        if spec is not None and w.dim() == 1 and spec.dim == 0 and key in ("in.arg.0", "out"):
            return "feat"
        return None

    def _tp_gather(self, t: torch.Tensor, kind: str, mod) -> torch.Tensor:
        tp = self.st.tp_size
        full = comm.all_gather(t.contiguous(), dim=-1, group=self.st.tp_group)
        secs = getattr(mod, "sections", None) if kind == "col" else None
        if not secs or len(secs) == 1:
            return full
        local = [s // tp for s in secs]
        parts = [p.split(local, dim=-1) for p in full.chunk(tp, dim=-1)]
        return torch.cat([parts[r][i] for i in range(len(local)) for r in range(tp)], dim=-1)

    # -- SP --
    def _sp_dim(self, layer: str, key: str, t: torch.Tensor):
        if self.seq_dim is not None:
            return self.seq_dim(layer, key, t)
        if t.dim() >= 3 and t.shape[1] == self.local_seq:
            return 1
        if t.dim() == 2 and t.shape[0] == self.local_seq and t.is_floating_point():
            return 0
        return None

    def __call__(self, layer: str, key: str, t: torch.Tensor) -> torch.Tensor:
        from phyx.parallel import sp_gather

        kind = self._tp_kind(layer, key)
        if kind is not None:
            t = self._tp_gather(t, kind, self.modules.get(layer.split("#")[0]))
        if self.local_seq is not None:
            d = self._sp_dim(layer, key, t)
            if d is not None:
                t = sp_gather(t.contiguous(), dim=d, orig_len=self.seq_len)
        return t


def record_parallel_run(spec, config, dtype="fp32", *, seq_len: int | None = None,
                        seq_dim: Callable | None = None):
    """In every rank of a process group: init the parallel layout `config` (ParallelConfig),
    record `spec` with TP / SP shards merged, reset the layout. Returns the same RunData on every
    rank (full tensors)."""
    from phyx.parallel import init_parallel, reset_parallel_state
    from phyx.tools.parity.model import record_run

    st = init_parallel(config)
    try:
        run = record_run(spec, None, dtype, merge=ParallelMerge(seq_len, seq_dim, st))
        run.manifest["parallel_capture"] = {"cfg": st.cfg_size, "sp": st.sp_size, "tp": st.tp_size,
                                            "merged": True, "seq_len": seq_len}
        return run
    finally:
        reset_parallel_state()
