"""phyx.parallel: cfg x sp x tp on any backend, through phyx.comm (never the raw collectives API).

    state = init_parallel(ParallelConfig(cfg=2, sp=2, tp=2))   # 8 ranks
    # model code uses ColumnParallelLinear / RowParallelLinear / ulysses_attention / cfg helpers,
    # which read get_parallel_state() and degrade to plain single-device code when sizes are 1.
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
from phyx.parallel.state import (
                                  AXES,
                                  ParallelConfig,
                                  ParallelState,
                                  get_parallel_state,
                                  init_parallel,
                                  reset_parallel_state,
                                  set_parallel_state,
)
from phyx.parallel.ulysses import (
                                  check_ulysses_heads,
                                  padded_len,
                                  sp_gather,
                                  sp_pad_and_shard,
                                  sp_shard_rope,
                                  ulysses_attention,
)

__all__ = [
    "ParallelConfig", "ParallelState", "init_parallel", "get_parallel_state", "set_parallel_state",
    "reset_parallel_state", "AXES",
    "ColumnParallelLinear", "RowParallelLinear", "QKVParallelLinear", "TPRMSNorm", "tp_rms_norm",
    "load_full_state_dict",
    "ulysses_attention", "ring_attention", "sp_pad_and_shard", "sp_gather", "sp_shard_rope", "padded_len",
    "check_ulysses_heads",
    "cfg_split", "cfg_gather_combine", "check_guidance", "shared_noise", "sync_replicated_grads",
]
