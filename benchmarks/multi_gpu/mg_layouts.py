"""Which parallel layouts (cfg, sp, tp; sp = ulysses x ring) a multi-GPU run measures, from the
--modes words.

Words: 'tp' (tp = N), 'sp' (Ulysses sp = N), 'ring' (ring attention over N ranks, ulysses 1),
'usp' (every ulysses x ring split of N with both > 1), 'cfg' (cfg = 2; needs N = 2 since cfg is
at most 2), 'hybrid' (every factorisation of N with at least two axes > 1), 'all' (tp, sp, cfg,
hybrid), or an explicit layout such as 'cfg2xsp2', 'sp4xtp2', 'ring2', 'sp2xring2' (axes not
named are 1; 'ulysses' is another name for 'sp'). Every layout must use all N ranks:
phyx.parallel builds one mesh over the whole world.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

AXES = ("cfg", "sp", "tp")
WORDS = ("tp", "sp", "ring", "usp", "cfg", "hybrid", "all")
_EXPLICIT = re.compile(r"^(cfg|sp|ulysses|ring|tp)(\d+)$")


@dataclass(frozen=True)
class Mode:
    """One layout to run, or the reason it is skipped (layout may be None then)."""
    label: str
    layout: tuple[int, int, int] | None       # (cfg, sp, tp), sp = ulysses x ring
    skip: str | None = None
    ring: int = 1                             # ring part of sp (1: Ulysses only)

    @property
    def config_kwargs(self) -> dict:
        """ParallelConfig(**mode.config_kwargs)."""
        cfg, sp, tp = self.layout
        return dict(cfg=cfg, sp=sp, tp=tp, ring=self.ring)

    @property
    def layout_dict(self) -> dict:
        cfg, sp, tp = self.layout
        return {"cfg": cfg, "sp": sp, "tp": tp, "ulysses": sp // self.ring, "ring": self.ring}

    @property
    def guided(self) -> bool:
        """CFG layouts compare the guided prediction (cond and uncond combined)."""
        return self.layout is not None and self.layout[0] > 1


def label_of(layout: tuple[int, int, int], ring: int = 1) -> str:
    cfg, sp, tp = layout
    parts = [f"cfg{cfg}" if cfg > 1 else "", f"sp{sp // ring}" if sp // ring > 1 else "",
             f"ring{ring}" if ring > 1 else "", f"tp{tp}" if tp > 1 else ""]
    return "x".join(p for p in parts if p) or "single"


def parse_explicit(word: str) -> tuple[tuple[int, int, int], int]:
    """'cfg2xsp2xring2' -> ((cfg, sp = ulysses x ring, tp), ring)."""
    sizes = dict.fromkeys(("cfg", "sp", "ring", "tp"), 1)
    for part in word.split("x"):
        m = _EXPLICIT.match(part)
        axis = "sp" if m and m.group(1) == "ulysses" else m.group(1) if m else None
        if not m or sizes[axis] != 1:
            raise ValueError(f"bad mode {word!r}: use {', '.join(WORDS)} or a layout like "
                             f"'cfg2xsp2' / 'sp4xtp2' / 'sp2xring2' (each axis once, with its size)")
        sizes[axis] = int(m.group(2))
        if sizes[axis] < 1:
            raise ValueError(f"bad mode {word!r}: sizes must be >= 1")
    return (sizes["cfg"], sizes["sp"] * sizes["ring"], sizes["tp"]), sizes["ring"]


def hybrids(world: int) -> list[tuple[int, int, int]]:
    """Layouts of `world` ranks with at least two parallel axes (cfg at most 2)."""
    out = []
    for cfg in (1, 2):
        if world % cfg:
            continue
        rest = world // cfg
        for sp in range(1, rest + 1):
            if rest % sp:
                continue
            tp = rest // sp
            if sum(n > 1 for n in (cfg, sp, tp)) >= 2:
                out.append((cfg, sp, tp))
    return out


def plan(words: list[str], world: int) -> list[Mode]:
    """The modes to run for `words` on `world` ranks, in order, without duplicates; layouts that
    cannot run here come back with their skip reason (they are recorded, not silently dropped)."""
    if "all" in words:
        words = [w for w in words if w != "all"] + ["tp", "sp", "cfg", "hybrid"]
    modes: list[Mode] = []
    seen = set()

    def add(m: Mode):
        if m.label not in seen:
            seen.add(m.label)
            modes.append(m)

    for w in words:
        if world == 1 and w in WORDS:
            add(Mode(w, None, "needs more than one rank (launch with torchrun --nproc_per_node N>1)"))
        elif w == "tp":
            add(Mode(label_of((1, 1, world)), (1, 1, world)))
        elif w == "sp":
            add(Mode(label_of((1, world, 1)), (1, world, 1)))
        elif w == "ring":
            add(Mode(label_of((1, world, 1), world), (1, world, 1), ring=world))
        elif w == "usp":
            splits = [r for r in range(2, world) if world % r == 0]
            if not splits:
                add(Mode("usp", None, f"USP needs ulysses and ring both > 1: at least 4 ranks, the "
                                      f"world has {world}"))
            for r in splits:
                add(Mode(label_of((1, world, 1), r), (1, world, 1), ring=r))
        elif w == "cfg":
            if world == 2:
                add(Mode("cfg2", (2, 1, 1)))
            else:
                add(Mode("cfg", None, f"cfg parallel alone uses 2 ranks, the world has {world}; "
                                      f"cfg2 combined with sp/tp runs under 'hybrid'"))
        elif w == "hybrid":
            found = hybrids(world)
            if not found:
                add(Mode("hybrid", None, f"no layout of {world} ranks has two parallel axes "
                                         f"(needs at least 4 ranks)"))
            for lay in found:
                add(Mode(label_of(lay), lay))
        else:
            lay, ring = parse_explicit(w)
            n = lay[0] * lay[1] * lay[2]
            if lay[0] > 2:
                add(Mode(label_of(lay, ring), None, "cfg is at most 2 (cond and uncond)", ring))
            elif n != world:
                add(Mode(label_of(lay, ring), None, f"layout uses {n} ranks, the world has {world}", ring))
            else:
                add(Mode(label_of(lay, ring), lay, ring=ring))
    return modes
