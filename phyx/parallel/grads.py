"""Training under sequence or CFG parallelism: every SP (and CFG) rank back-propagates only its
own tokens (or branch), so each rank holds part of the gradient of every replicated parameter.
sync_replicated_grads sums those parts over the sp and cfg groups after backward, as data
parallelism does. TP needs no sync: TP-sharded parameters own their gradient, and replicated ones
see identical gradients on every TP rank. Under FSDP2 on the flattened cfg x sp mesh the
reduce-scatter does this already; call it only for parameters FSDP does not manage."""
from __future__ import annotations

import torch

from phyx import comm
from phyx.parallel.state import ParallelState, get_parallel_state


@torch.no_grad()
def sync_replicated_grads(model: torch.nn.Module, *, state: ParallelState | None = None) -> int:
    """Sum each parameter's gradient over the sp and cfg groups; returns how many were synced."""
    st = state if state is not None else get_parallel_state()
    groups = [g for g, n in ((st.sp_group, st.sp_size), (st.cfg_group, st.cfg_size)) if n > 1]
    if not groups:
        return 0
    count = 0
    for p in model.parameters():
        if p.grad is None:
            continue
        g = p.grad
        for group in groups:
            g = comm.all_reduce(g, group=group)
        p.grad.copy_(g)
        count += 1
    return count
