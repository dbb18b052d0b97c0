"""ParallelConfig and the per-process ParallelState (mesh, groups, ranks per axis).

The mesh is (cfg, sp, tp) in row-major order: tp varies fastest, so the ranks of a TP group are
neighbours (same node, fastest links: TP talks every layer), then SP (all-to-all every attention),
then CFG (one all-gather per step). rank = (cfg_rank * sp + sp_rank) * tp + tp_rank.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from phyx import comm
from phyx.errors import ParallelConfigError

AXES = ("cfg", "sp", "tp")


@dataclass(frozen=True)
class ParallelConfig:
    cfg: int = 1
    sp: int = 1
    tp: int = 1

    def __post_init__(self):
        for name in AXES:
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ParallelConfigError(f"ParallelConfig.{name} must be a positive integer, got {v!r}")
        if self.cfg > 2:
            raise ParallelConfigError(f"ParallelConfig.cfg must be 1 or 2 (cond and uncond), got {self.cfg}")

    @property
    def world_size(self) -> int:
        return self.cfg * self.sp * self.tp

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.cfg, self.sp, self.tp)

    def coords(self, rank: int) -> dict[str, int]:
        return {"cfg": rank // (self.sp * self.tp), "sp": (rank // self.tp) % self.sp,
                "tp": rank % self.tp}

    def check_heads(self, num_heads: int, num_kv_heads: int | None = None) -> None:
        """Clear errors when attention heads cannot be split by this layout."""
        nkv = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads % self.tp:
            raise ParallelConfigError(
                f"tp={self.tp} does not divide the {num_heads} attention heads; choose tp from "
                f"{_divisors(num_heads)}")
        if nkv % self.tp:
            raise ParallelConfigError(
                f"tp={self.tp} does not divide the {nkv} KV heads (GQA): each TP rank needs whole KV "
                f"heads, so tp must be at most and a divisor of {nkv}; choose tp from {_divisors(nkv)}")
        if (num_heads // self.tp) % self.sp:
            raise ParallelConfigError(
                f"Ulysses needs the heads per TP rank ({num_heads} / tp={self.tp} = "
                f"{num_heads // self.tp}) to divide by sp={self.sp}: heads must divide by sp x tp = "
                f"{self.sp * self.tp}. Choose sp x tp from {_divisors(num_heads)} (or use ring attention).")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclass
class ParallelState:
    config: ParallelConfig
    rank: int = 0
    mesh: Any = None
    groups: dict = field(default_factory=dict)
    coords: dict = field(default_factory=lambda: {a: 0 for a in AXES})

    # group / rank / size per axis -------------------------------------------------------------
    def group(self, axis: str):
        return self.groups.get(axis)

    def size(self, axis: str) -> int:
        return getattr(self.config, axis)

    def axis_rank(self, axis: str) -> int:
        return self.coords[axis]

    tp_group = property(lambda s: s.groups.get("tp"))
    sp_group = property(lambda s: s.groups.get("sp"))
    cfg_group = property(lambda s: s.groups.get("cfg"))
    tp_size = property(lambda s: s.config.tp)
    sp_size = property(lambda s: s.config.sp)
    cfg_size = property(lambda s: s.config.cfg)
    tp_rank = property(lambda s: s.coords["tp"])
    sp_rank = property(lambda s: s.coords["sp"])
    cfg_rank = property(lambda s: s.coords["cfg"])

    @property
    def is_trivial(self) -> bool:
        return self.config.world_size == 1

    def describe(self) -> str:
        c = self.config
        return (f"rank {self.rank}: cfg {self.cfg_rank}/{c.cfg}, sp {self.sp_rank}/{c.sp}, "
                f"tp {self.tp_rank}/{c.tp}")


_current: dict = {"state": None}


def init_parallel(config: ParallelConfig | None = None, *, mesh=None) -> ParallelState:
    """Build the mesh and per-axis groups for `config` and make it the current state.

    Starts the process group from torchrun's environment if it is not running yet. `mesh`: an
    existing DeviceMesh to adopt; it must have dims named ('cfg', 'sp', 'tp') with the config's
    sizes."""
    config = config or ParallelConfig()
    if config.world_size == 1 and not comm.is_initialized():
        return set_parallel_state(ParallelState(config))
    if not comm.is_initialized():
        comm.init_distributed()
    ws = comm.world_size()
    if ws != config.world_size:
        raise ParallelConfigError(
            f"world size {ws} does not equal cfg x sp x tp = {config.cfg} x {config.sp} x {config.tp} "
            f"= {config.world_size}; launch {config.world_size} ranks or change the layout")
    if mesh is None:
        mesh = comm.init_mesh(config.shape, AXES)
    else:
        names = tuple(getattr(mesh, "mesh_dim_names", None) or ())
        shape = tuple(mesh.shape)
        if names != AXES or shape != config.shape:
            raise ParallelConfigError(
                f"the given mesh {dict(zip(names, shape)) or shape} does not match {config}: phyx "
                f"needs dims named {AXES} with sizes {config.shape}")
    rank = comm.rank()
    coords = config.coords(rank)
    groups = {a: comm.mesh_group(mesh, a) for a in AXES}
    for a in AXES:  # the mesh must agree with phyx's rank arithmetic (tp innermost)
        if mesh.get_local_rank(a) != coords[a]:
            raise ParallelConfigError(
                f"mesh coordinate of rank {rank} on axis {a!r} is {mesh.get_local_rank(a)}, expected "
                f"{coords[a]} (phyx orders the mesh cfg, sp, tp with tp innermost)")
    return set_parallel_state(ParallelState(config, rank, mesh, groups, coords))


def set_parallel_state(state: ParallelState | None) -> ParallelState | None:
    _current["state"] = state
    return state


def get_parallel_state() -> ParallelState:
    """The current state; a trivial single-device state when none was initialised."""
    if _current["state"] is None:
        return ParallelState(ParallelConfig())
    return _current["state"]


def reset_parallel_state() -> None:
    _current["state"] = None
