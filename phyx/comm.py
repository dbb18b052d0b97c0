"""phyx.comm: the only place phyx calls torch.distributed.

Model and parallel code (vendor-free zone) call these wrappers instead, so the process-group
backend (gloo / nccl / hccl) comes from the active phyx backend, every collective has a bounded
timeout, a failure names the collective, the group and the likely cause, and no collective relies
on ReduceOp.AVG (HCCL lacks it on some versions: we sum and divide).

Collectives return their result (they never rely on in-place side effects at the call site), and
with `group` of size 1 (or no process group at all) they are the identity, so single-device code
paths need no special casing.
"""
from __future__ import annotations

import datetime
import inspect
import os
from typing import Sequence

import torch
import torch.distributed as dist

from phyx.errors import PhyxError

DEFAULT_TIMEOUT_S = 300.0  # bounded: a dead or stuck peer fails the others within this time
TIMEOUT_ENV = "PHYX_DIST_TIMEOUT_S"

_state: dict = {"timeout_s": None, "local_rank": 0}


class CommError(PhyxError):
    """A collective failed: usually a peer rank died, hung, or ranks called different collectives."""


# --- life cycle -----------------------------------------------------------------------------

def dist_timeout_s(environ=None) -> float:
    """The process-group timeout from PHYX_DIST_TIMEOUT_S (default 300 s), or a CommError."""
    env = os.environ if environ is None else environ
    raw = env.get(TIMEOUT_ENV)
    if raw is None or raw == "":
        return DEFAULT_TIMEOUT_S
    try:
        t = float(raw)
    except ValueError:
        t = float("nan")
    if not t > 0 or t == float("inf"):
        raise CommError(f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds: set it to e.g. "
                        f"{DEFAULT_TIMEOUT_S:.0f} (the default), or 1800 when one rank works alone for "
                        f"minutes (checkpoint load, VAE decode), or unset it")
    return t


def _timeout_s(timeout_s: float | None) -> float:
    if timeout_s is not None:
        return float(timeout_s)
    return dist_timeout_s()


def _dist_env_defaults(backend, t: float) -> dict:
    """The backend's switches for timeout t (plug-ins written before the argument get none)."""
    try:
        params = inspect.signature(backend.dist_env_defaults).parameters
    except (TypeError, ValueError):
        params = {}
    if "timeout_s" in params:
        return backend.dist_env_defaults(timeout_s=t)
    return backend.dist_env_defaults()


def _env_int(name: str, default: int | None = None) -> int:
    v = os.environ.get(name)
    if v is None:
        if default is None:
            raise CommError(f"environment variable {name} is not set: launch with torchrun "
                            f"(which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) "
                            f"or pass rank= and world_size= to phyx.comm.init_distributed")
        return default
    try:
        return int(v)
    except ValueError:
        raise CommError(f"environment variable {name}={v!r} is not an integer") from None


def init_distributed(timeout_s: float | None = None, *, rank: int | None = None,
                     world_size: int | None = None, local_rank: int | None = None,
                     init_method: str | None = None) -> tuple[int, int, int]:
    """Start the default process group from torchrun's environment (or explicit arguments).

    Returns (rank, world_size, local_rank). The process-group backend is
    phyx.get_backend().dist_backend; the backend's bounded-failure environment switches
    (e.g. HCCL_EXEC_TIMEOUT, TORCH_NCCL_ASYNC_ERROR_HANDLING) are set unless already set.
    Idempotent: a second call returns the existing layout.
    """
    from phyx.backend import get_backend

    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), _state["local_rank"]
    backend = get_backend()
    rank = _env_int("RANK") if rank is None else rank
    world_size = _env_int("WORLD_SIZE") if world_size is None else world_size
    local_rank = _env_int("LOCAL_RANK", rank) if local_rank is None else local_rank
    if not 0 <= rank < world_size:
        raise CommError(f"rank {rank} is outside world size {world_size}")
    t = _timeout_s(timeout_s)
    for k, v in _dist_env_defaults(backend, t).items():
        os.environ.setdefault(k, str(v))
    if backend.device_type != "cpu":
        backend.device.set_device(local_rank)
    if init_method is None and "MASTER_ADDR" not in os.environ:
        raise CommError("MASTER_ADDR / MASTER_PORT are not set: launch with torchrun or pass "
                        "init_method='tcp://host:port'")
    try:
        dist.init_process_group(backend=backend.dist_backend, init_method=init_method,
                                rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=t))
    except Exception as e:
        raise CommError(f"rank {rank}/{world_size}: could not start the {backend.dist_backend!r} "
                        f"process group within {t:.0f} s ({type(e).__name__}: {e}). Check that every "
                        f"rank was launched and MASTER_ADDR/MASTER_PORT are reachable.") from e
    _state["timeout_s"] = t
    _state["local_rank"] = local_rank
    return rank, world_size, local_rank


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank(group=None) -> int:
    return dist.get_rank(group) if is_initialized() else 0


def world_size(group=None) -> int:
    return dist.get_world_size(group) if is_initialized() else 1


def local_rank() -> int:
    return _state["local_rank"]


def timeout_s() -> float | None:
    return _state["timeout_s"]


def group_ranks(group=None) -> list[int]:
    """Global ranks in `group` (the world when None)."""
    if not is_initialized():
        return [0]
    if group is None:
        return list(range(dist.get_world_size()))
    return dist.get_process_group_ranks(group)


def destroy() -> None:
    if is_initialized():
        dist.destroy_process_group()
    _state["timeout_s"] = None
    _state.pop("world_mesh", None)


# --- collectives ----------------------------------------------------------------------------

def _size(group) -> int:
    return dist.get_world_size(group) if is_initialized() else 1


def _fail(what: str, group, e: Exception) -> CommError:
    ranks = group_ranks(group)
    return CommError(
        f"rank {rank()}: {what} over ranks {ranks} failed ({type(e).__name__}: {e}). A peer rank "
        f"probably died or stopped answering (timeout {_state['timeout_s']} s), or the ranks called "
        f"different collectives; see the first failing rank's log.")


_REDUCE_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN", "product": "PRODUCT"}


# --- collectives ------------------------------------------------------------------------------
# The public collectives are autograd-aware, so training under TP / SP gets correct gradients.
# Convention (Megatron's): after a collective, what follows is either replicated (the same
# computation on every rank, e.g. the output of a row-parallel linear) or sharded (each rank
# continues with its own part, e.g. the all-heads RMSNorm statistics feeding local heads).
# That decides the backward of a sum: identity when what follows is replicated, a sum of the
# ranks' gradients when it is sharded.

def _all_reduce_raw(t: torch.Tensor, op: str, group, inplace: bool = False) -> torch.Tensor:
    # The caller's tensor is reduced in place only when it says the tensor is its own temporary
    # (a row-parallel partial product): that saves a copy per layer on the hot path.
    out = t if inplace and t.is_contiguous() else t.detach().clone(memory_format=torch.contiguous_format)
    try:
        dist.all_reduce(out, op=getattr(dist.ReduceOp, _REDUCE_OPS.get(op, "SUM")), group=group)
    except Exception as e:
        raise _fail(f"all_reduce({op})", group, e) from e
    return out


def _all_gather_raw(t: torch.Tensor, dim: int, group) -> torch.Tensor:
    n = _size(group)
    t = t.detach().contiguous()
    parts = [torch.empty_like(t) for _ in range(n)]
    try:
        dist.all_gather(parts, t, group=group)
    except Exception as e:
        raise _fail("all_gather", group, e) from e
    return torch.cat(parts, dim=dim)


def _all_to_all_raw(x: torch.Tensor, scatter_dim: int, gather_dim: int, group) -> torch.Tensor:
    n = _size(group)
    # Move the scatter dim first so each rank's part is one contiguous block.
    send = x.detach().movedim(scatter_dim, 0).contiguous()
    recv = torch.empty_like(send)
    try:
        dist.all_to_all_single(recv, send, group=group)
    except Exception as e:
        raise _fail("all_to_all", group, e) from e
    # recv: n blocks along dim 0, block j came from rank j and holds our scatter part of its x.
    blocks = recv.movedim(0, scatter_dim).chunk(n, dim=scatter_dim)
    return torch.cat(blocks, dim=gather_dim)


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, group, grad, inplace):
        ctx.group, ctx.grad = group, grad
        out = _all_reduce_raw(t, "sum", group, inplace)
        if out is t:
            ctx.mark_dirty(t)
        return out

    @staticmethod
    def backward(ctx, g):
        if ctx.grad == "sum":
            g = _all_reduce_raw(g, "sum", ctx.group)
        return g, None, None, None


class _CopyToGroup(torch.autograd.Function):
    """Forward identity; backward sums the ranks' gradients (a replicated input feeding sharded
    computation, e.g. the input of a column-parallel linear)."""

    @staticmethod
    def forward(ctx, t, group):
        ctx.group = group
        return t.view_as(t)

    @staticmethod
    def backward(ctx, g):
        return _all_reduce_raw(g, "sum", ctx.group), None


class _AllGather(torch.autograd.Function):
    """Backward keeps this rank's slice: what follows the gather is replicated."""

    @staticmethod
    def forward(ctx, t, dim, group):
        ctx.dim, ctx.group = dim, group
        return _all_gather_raw(t, dim, group)

    @staticmethod
    def backward(ctx, g):
        n = _size(ctx.group)
        return g.chunk(n, dim=ctx.dim)[dist.get_rank(ctx.group)].contiguous(), None, None


class _AllToAll4d(torch.autograd.Function):
    """A permutation across ranks: its backward is the inverse exchange."""

    @staticmethod
    def forward(ctx, x, scatter_dim, gather_dim, group):
        ctx.dims, ctx.group = (scatter_dim, gather_dim), group
        return _all_to_all_raw(x, scatter_dim, gather_dim, group)

    @staticmethod
    def backward(ctx, g):
        scatter_dim, gather_dim = ctx.dims
        return _all_to_all_raw(g, gather_dim, scatter_dim, ctx.group), None, None, None


def all_reduce(t: torch.Tensor, op: str = "sum", group=None, *, grad: str = "identity",
               inplace: bool = False) -> torch.Tensor:
    """Reduce `t` over `group`; returns the result ('avg' is sum then divide, never ReduceOp.AVG).

    For sum / avg the result is differentiable: grad='identity' when what follows is replicated
    on every rank (row-parallel outputs), grad='sum' when what follows is sharded (statistics
    that feed each rank's own slice, as in the all-heads RMSNorm). max / min / product carry no
    gradient. inplace=True lets a caller that owns `t` (a fresh temporary) skip the copy."""
    if op not in _REDUCE_OPS and op != "avg":
        raise ValueError(f"all_reduce op must be one of {sorted(_REDUCE_OPS) + ['avg']}, got {op!r}")
    if grad not in ("identity", "sum"):
        raise ValueError(f"all_reduce grad must be 'identity' or 'sum', got {grad!r}")
    n = _size(group)
    if n == 1:
        return t
    if op in ("sum", "avg"):
        out = _AllReduceSum.apply(t, group, grad, inplace)
        return out / n if op == "avg" else out
    return _all_reduce_raw(t, op, group)


def copy_to_group(t: torch.Tensor, group=None) -> torch.Tensor:
    """Identity forward; in backward, the gradients of all ranks of `group` are summed. Put it
    where a replicated tensor enters rank-specific computation (a column-parallel input)."""
    if _size(group) == 1:
        return t
    return _CopyToGroup.apply(t, group)


def all_gather(t: torch.Tensor, dim: int = 0, group=None) -> torch.Tensor:
    """Gather equal-shaped tensors from every rank of `group`, concatenated along `dim` in rank
    order. Differentiable: the backward keeps this rank's slice of the gradient."""
    if _size(group) == 1:
        return t
    return _AllGather.apply(t, dim, group)


def all_to_all_4d(x: torch.Tensor, scatter_dim: int, gather_dim: int, group=None) -> torch.Tensor:
    """Split `x` in `group_size` parts along scatter_dim, send part j to rank j, and concatenate
    what arrives along gather_dim (rank order). Differentiable (the backward is the inverse
    exchange).

    Ulysses on [B, S, N, D]: scatter_dim=2, gather_dim=1 turns local-sequence / all-heads
    [B, S/P, N, D] into full-sequence / local-heads [B, S, N/P, D]; scatter_dim=1, gather_dim=2
    is the inverse.
    """
    if x.dim() != 4:
        raise ValueError(f"all_to_all_4d expects a 4-D tensor [B, S, N, D], got {tuple(x.shape)}")
    n = _size(group)
    if n == 1:
        return x
    if x.shape[scatter_dim] % n:
        raise ValueError(f"all_to_all_4d: dim {scatter_dim} of size {x.shape[scatter_dim]} does not "
                         f"split across {n} ranks")
    return _AllToAll4d.apply(x, scatter_dim, gather_dim, group)


def broadcast(t: torch.Tensor, src: int = 0, group=None) -> torch.Tensor:
    """Broadcast from global rank `src` (a member of `group`); returns the tensor."""
    if _size(group) == 1:
        return t
    out = t.contiguous()
    try:
        dist.broadcast(out, src=src, group=group)
    except Exception as e:
        raise _fail(f"broadcast(src={src})", group, e) from e
    return out


def barrier(group=None) -> None:
    if _size(group) == 1:
        return
    try:
        # A tiny all_reduce instead of dist.barrier: it honours the group timeout on every
        # backend (gloo's barrier and NCCL's device barrier differ in how they time out).
        dev = _collective_device()
        dist.all_reduce(torch.zeros(1, device=dev), group=group)
    except Exception as e:
        raise _fail("barrier", group, e) from e


def ring_exchange(t: torch.Tensor, group=None) -> torch.Tensor:
    """Send `t` to the next rank of `group` and return what the previous rank sent (a ring step,
    used by ring attention)."""
    return ring_exchange_start(t, group).wait()


class _PendingExchange:
    """A ring step in flight (ring_exchange_start); wait() returns what the previous rank sent."""

    def __init__(self, recv, works, group):
        self._recv, self._works, self._group = recv, works, group

    def wait(self) -> torch.Tensor:
        try:
            for w in self._works:
                w.wait()
        except Exception as e:
            raise _fail("ring_exchange", self._group, e) from e
        return self._recv


def ring_exchange_start(t: torch.Tensor, group=None) -> _PendingExchange:
    """Start a ring step (send `t` to the next rank of `group`, receive from the previous one)
    and return at once, so the caller can compute while it travels; .wait() gives the received
    tensor. Ring attention overlaps each block's attention with the next block's transfer."""
    n = _size(group)
    if n == 1:
        return _PendingExchange(t, [], group)
    ranks = group_ranks(group)
    me = ranks.index(dist.get_rank())
    t = t.contiguous()
    recv = torch.empty_like(t)
    ops = [dist.P2POp(dist.isend, t, ranks[(me + 1) % n], group),
           dist.P2POp(dist.irecv, recv, ranks[(me - 1) % n], group)]
    try:
        works = dist.batch_isend_irecv(ops)
    except Exception as e:
        raise _fail("ring_exchange", group, e) from e
    return _PendingExchange(recv, works, group)


def _collective_device() -> torch.device:
    from phyx.backend import get_backend

    b = get_backend()
    return b.torch_device(None if b.device_type == "cpu" else b.device.current_device())


# --- groups and meshes ---------------------------------------------------------------------

def new_group(ranks: Sequence[int]):
    """A process group over `ranks` (every rank of the world must call this, in the same order)."""
    if not is_initialized():
        return None
    return dist.new_group(ranks=list(ranks), timeout=datetime.timedelta(seconds=_state["timeout_s"]
                                                                        or _timeout_s(None)))


def init_mesh(shape: Sequence[int], names: Sequence[str]):
    """A named DeviceMesh of the given shape on the backend's device type (row-major: the last
    name varies fastest). Requires init_distributed() first."""
    from torch.distributed.device_mesh import init_device_mesh

    from phyx.backend import get_backend

    if not is_initialized():
        raise CommError("init_mesh needs a process group: call phyx.comm.init_distributed() first")
    total = 1
    for s in shape:
        total *= int(s)
    if total != dist.get_world_size():
        raise CommError(f"mesh shape {tuple(shape)} has {total} ranks but the world size is "
                        f"{dist.get_world_size()}")
    try:
        return init_device_mesh(get_backend().device_type, tuple(int(s) for s in shape),
                                mesh_dim_names=tuple(names))
    except Exception as e:
        raise CommError(f"could not build the device mesh {dict(zip(names, shape))}: "
                        f"{type(e).__name__}: {e}") from e


def mesh_group(mesh, name: str):
    return mesh.get_group(name)


def flatten_mesh(mesh, names: Sequence[str], flat_name: str):
    """A 1-D mesh over the product of the named dims (for FSDP over the non-TP ranks)."""
    sub = mesh[tuple(names)] if len(names) > 1 else mesh[names[0]]
    if len(names) == 1:
        return sub
    return sub._flatten(flat_name)  # torch has no public flatten yet (2.13)


def fully_shard(module: torch.nn.Module, mesh=None, **kwargs) -> torch.nn.Module:
    """FSDP2 (torch.distributed.fsdp.fully_shard) on `mesh` (default: the whole world on the
    backend's device type)."""
    from torch.distributed.fsdp import fully_shard as _fully_shard

    if mesh is None:
        if "world_mesh" not in _state:
            _state["world_mesh"] = init_mesh((dist.get_world_size(),), ("fsdp",))
        mesh = _state["world_mesh"]
    module = _fully_shard(module, mesh=mesh, **kwargs)
    # FSDP2 averages fp32/bf16 gradients with ReduceOp.AVG, which HCCL lacks on some versions:
    # reduce with SUM and divide afterwards, as every phyx collective does.
    module.set_force_sum_reduction_for_comms(True)
    return module


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a DTensor (an FSDP2 parameter or gradient shard: an all-gather
    over its mesh, so every rank of the mesh must call it); a plain tensor is returned as is."""
    from torch.distributed.tensor import DTensor

    if not isinstance(t, DTensor):
        return t
    try:
        return t.full_tensor()
    except Exception as e:
        raise _fail("full_tensor (all_gather of a DTensor)", None, e) from e
