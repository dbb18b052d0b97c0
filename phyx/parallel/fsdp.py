"""FSDP2 for models too large for one device: parameters sharded across the ranks that would
otherwise hold identical copies (all ranks of the same TP coordinate: the cfg x sp ranks), on
the backend's device mesh, through phyx.comm.fully_shard (torch FSDP2 fully_shard).
"""
from __future__ import annotations

import torch.nn as nn

from phyx import comm
from phyx.errors import ParallelConfigError
from phyx.parallel.state import ParallelState, get_parallel_state


def fsdp_mesh(state: ParallelState | None = None):
    """A 1-D mesh over the cfg x sp ranks that share this rank's TP coordinate."""
    st = state if state is not None else get_parallel_state()
    if st.mesh is None:
        raise ParallelConfigError("FSDP needs an initialised parallel state with more than one "
                                  "rank: call phyx.parallel.init_parallel(ParallelConfig(...)) first")
    axes = [a for a in ("cfg", "sp") if st.size(a) > 1] or ["sp"]
    return comm.flatten_mesh(st.mesh, axes, "fsdp")


def shard_model(model: nn.Module, blocks=None, *, state: ParallelState | None = None,
                reshard_after_forward: bool = True, mesh=None) -> nn.Module:
    """fully_shard each module in `blocks` (e.g. the transformer blocks), then the root, so
    parameters are gathered one block at a time."""
    mesh = mesh if mesh is not None else fsdp_mesh(state)
    for b in (blocks or []):
        comm.fully_shard(b, mesh=mesh, reshard_after_forward=reshard_after_forward)
    comm.fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward)
    return model


def full_parameters(model: nn.Module) -> dict:
    """{name: whole parameter} of a sharded model (all-gathered; every rank of the mesh must call
    this, in the same order, which named_parameters guarantees)."""
    return {n: comm.full_tensor(p.detach()) for n, p in model.named_parameters()}


def full_gradients(model: nn.Module) -> dict:
    """{name: whole gradient} of the parameters that have one (same calling rule as
    full_parameters; the set of names with gradients must agree across ranks)."""
    return {n: comm.full_tensor(p.grad) for n, p in model.named_parameters() if p.grad is not None}
