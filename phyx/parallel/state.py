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
    """cfg x sp x tp ranks, with the sequence-parallel axis split as sp = ulysses x ring.

    `sp` alone means Ulysses (ParallelConfig(sp=4) == ParallelConfig(ulysses=4)); give `ring`
    (and optionally `ulysses`) for ring attention or USP (Ulysses within groups of `ulysses`
    neighbouring SP ranks, ring attention across those groups). Ulysses needs the heads per TP
    rank to divide by `ulysses`; ring has no head constraint, so it carries any sp beyond the
    head count."""
    cfg: int = 1
    sp: int | None = None
    tp: int = 1
    ulysses: int | None = None
    ring: int | None = None

    def __post_init__(self):
        for name in ("cfg", "tp"):
            _positive(name, getattr(self, name))
        for name in ("sp", "ulysses", "ring"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if self.cfg > 2:
            raise ParallelConfigError(f"ParallelConfig.cfg must be 1 or 2 (cond and uncond), got {self.cfg}")
        sp, u, r = self.sp, self.ulysses, self.ring
        if u is None and r is None:
            u, r = (sp or 1), 1
        elif u is None:
            u = (sp or r) // r
            if u * r != (sp or r):
                raise ParallelConfigError(f"sp={sp} is not a multiple of ring={r}; sp = ulysses x ring")
        elif r is None:
            r = (sp or u) // u
            if u * r != (sp or u):
                raise ParallelConfigError(f"sp={sp} is not a multiple of ulysses={u}; sp = ulysses x ring")
        if sp is not None and sp != u * r:
            raise ParallelConfigError(f"sp={sp} must equal ulysses x ring = {u} x {r}; drop sp or fix it")
        object.__setattr__(self, "sp", u * r)
        object.__setattr__(self, "ulysses", u)
        object.__setattr__(self, "ring", r)

    @property
    def world_size(self) -> int:
        return self.cfg * self.sp * self.tp

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.cfg, self.sp, self.tp)

    @property
    def sp_mode(self) -> str:
        """'none', 'ulysses', 'ring' or 'usp' (both)."""
        if self.sp == 1:
            return "none"
        return "ulysses" if self.ring == 1 else "ring" if self.ulysses == 1 else "usp"

    def describe(self) -> str:
        sp = f"sp={self.sp}" + (f" (ulysses {self.ulysses} x ring {self.ring})" if self.ring > 1 else "")
        return f"cfg={self.cfg} {sp} tp={self.tp}"

    def coords(self, rank: int) -> dict[str, int]:
        return {"cfg": rank // (self.sp * self.tp), "sp": (rank // self.tp) % self.sp,
                "tp": rank % self.tp}

    def check_heads(self, num_heads: int, num_kv_heads: int | None = None) -> None:
        check_layout(num_heads, num_kv_heads, self)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _positive(name, v):
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ParallelConfigError(f"ParallelConfig.{name} must be a positive integer, got {v!r}")


def check_layout(num_heads: int, num_kv_heads: int | None, config: "ParallelConfig",
                 what: str = "the model") -> None:
    """The one head-divisibility check: TP splits query and KV heads (whole KV heads per rank),
    Ulysses splits the heads left on each TP rank; ring has no head constraint. Raises
    ParallelConfigError naming the fix."""
    nkv = num_heads if num_kv_heads is None else num_kv_heads
    tp, u = config.tp, config.ulysses
    if num_heads % nkv:
        raise ParallelConfigError(f"{what}: query heads ({num_heads}) must be a multiple of KV heads ({nkv})")
    if num_heads % tp:
        raise ParallelConfigError(
            f"tp={tp} does not divide the {num_heads} attention heads of {what}; choose tp from "
            f"{_divisors(num_heads)}")
    if nkv % tp:
        raise ParallelConfigError(
            f"tp={tp} does not divide the {nkv} KV heads (GQA) of {what}: each TP rank needs whole KV "
            f"heads, so tp must be at most and a divisor of {nkv}; choose tp from {_divisors(nkv)}")
    local = num_heads // tp
    if local % u:
        ok = [d for d in _divisors(local) if config.sp % d == 0]
        best = max(ok)
        raise ParallelConfigError(
            f"Ulysses needs the heads per TP rank ({num_heads} / tp={tp} = {local}) to divide by "
            f"ulysses={u}: heads must divide by ulysses x tp = {u * tp}. Use ulysses from {ok} and "
            f"let ring attention carry the rest (e.g. ParallelConfig(ulysses={best}, "
            f"ring={config.sp // best}) for sp={config.sp})")


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
    # the SP axis split as ulysses x ring: sp_rank = ring_rank * ulysses + ulysses_rank (the
    # all-to-all runs within neighbouring ranks, the ring across those groups)
    ulysses_size = property(lambda s: s.config.ulysses)
    ring_size = property(lambda s: s.config.ring)
    ulysses_rank = property(lambda s: s.coords["sp"] % s.config.ulysses)
    ring_rank = property(lambda s: s.coords["sp"] // s.config.ulysses)

    @property
    def ulysses_group(self):
        return self.groups.get("sp") if self.config.ring == 1 else self.groups.get("ulysses")

    @property
    def ring_group(self):
        return self.groups.get("sp") if self.config.ulysses == 1 else self.groups.get("ring")

    @property
    def is_trivial(self) -> bool:
        return self.config.world_size == 1

    def describe(self) -> str:
        c = self.config
        sp = f"sp {self.sp_rank}/{c.sp}"
        if c.ring > 1 and c.ulysses > 1:
            sp += f" (ulysses {self.ulysses_rank}/{c.ulysses}, ring {self.ring_rank}/{c.ring})"
        return f"rank {self.rank}: cfg {self.cfg_rank}/{c.cfg}, {sp}, tp {self.tp_rank}/{c.tp}"


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
    if config.ulysses > 1 and config.ring > 1:
        groups.update(_usp_groups(config, rank))
    return set_parallel_state(ParallelState(config, rank, mesh, groups, coords))


def _usp_groups(config: ParallelConfig, rank: int) -> dict:
    """The ulysses and ring sub-groups of every SP group (every rank creates every group, in the
    same order, as process-group creation requires); returns this rank's two."""
    c, u, r, t = config, config.ulysses, config.ring, config.tp
    mine = {}
    for cfg in range(c.cfg):
        for tp in range(t):
            sp_ranks = [(cfg * c.sp + s) * t + tp for s in range(c.sp)]
            for ri in range(r):
                g = comm.new_group(sp_ranks[ri * u:(ri + 1) * u])
                if rank in sp_ranks[ri * u:(ri + 1) * u]:
                    mine["ulysses"] = g
            for ui in range(u):
                g = comm.new_group(sp_ranks[ui::u])
                if rank in sp_ranks[ui::u]:
                    mine["ring"] = g
    return mine


def set_parallel_state(state: ParallelState | None) -> ParallelState | None:
    _current["state"] = state
    return state


def get_parallel_state() -> ParallelState:
    """The current state; a trivial single-device state when none was initialised."""
    if _current["state"] is None:
        return ParallelState(ParallelConfig())
    return _current["state"]


def running_state(built_for: ParallelConfig) -> ParallelState:
    """The state a model built for layout `built_for` runs under: a single-device model runs
    anywhere (e.g. as the reference on every rank); a parallel one needs that layout current."""
    if built_for.world_size == 1:
        return ParallelState(ParallelConfig())
    cur = get_parallel_state()
    if cur.config != built_for:
        raise ParallelConfigError(
            f"the model was built for {built_for.describe()} but the current parallel state is "
            f"{cur.config.describe()}; build the model after phyx.parallel.init_parallel, or for "
            f"one device")
    return cur


def single_device() -> ParallelState:
    """A trivial state: build a model for one device whatever the current state is."""
    return ParallelState(ParallelConfig())


def reset_parallel_state() -> None:
    _current["state"] = None
