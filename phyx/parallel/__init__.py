"""phyx.parallel: cfg x sp x tp on any backend, through phyx.comm (never the raw collectives API).

    state = init_parallel(ParallelConfig(cfg=2, sp=2, tp=2))   # 8 ranks; sp = ulysses x ring
    state = init_parallel(ParallelConfig(ulysses=2, ring=2))   # USP on 4 ranks
    # model code shards its sequence through SequenceParallel (one entry point for Ulysses, ring
    # and USP); TP comes from each family's declarative plan (parallelize(model, TP_PLAN)).
    # Everything degrades to plain single-device code when the sizes are 1.
"""
from phyx.parallel.cfg import cfg_gather_combine, cfg_split, check_guidance, shared_noise
from phyx.parallel.grads import sync_replicated_grads
from phyx.parallel.layers import (
                                  ColumnParallelLinear,
                                  QKVParallelLinear,
                                  RowParallelLinear,
                                  TPRMSNorm,
                                  load_full_state_dict,
                                  tp_rms_norm,
)
from phyx.parallel.ring import ring_attention
from phyx.parallel.sequence import SequenceParallel, sp_attention
from phyx.parallel.state import (
                                  AXES,
                                  ParallelConfig,
                                  ParallelState,
                                  check_layout,
                                  get_parallel_state,
                                  init_parallel,
                                  reset_parallel_state,
                                  running_state,
                                  set_parallel_state,
                                  single_device,
)
from phyx.parallel.styles import Colwise, HeadShardedRMSNorm, Rowwise, parallelize
from phyx.parallel.ulysses import (
                                  padded_len,
                                  sp_gather,
                                  sp_pad_and_shard,
                                  sp_shard_rope,
                                  ulysses_attention,
)

__all__ = [
    "ParallelConfig", "ParallelState", "check_layout", "init_parallel", "get_parallel_state",
    "set_parallel_state", "reset_parallel_state", "running_state", "single_device", "AXES",
    "SequenceParallel", "sp_attention", "parallelize", "Colwise", "Rowwise", "HeadShardedRMSNorm",
    "ColumnParallelLinear", "RowParallelLinear", "QKVParallelLinear", "TPRMSNorm", "tp_rms_norm",
    "load_full_state_dict",
    "ulysses_attention", "ring_attention", "sp_pad_and_shard", "sp_gather", "sp_shard_rope", "padded_len",
    "cfg_split", "cfg_gather_combine", "check_guidance", "shared_noise", "sync_replicated_grads",
]
