"""Which parallel layouts (cfg, sp, tp) a multi-GPU run measures, from the --modes words.

Words: 'tp' (tp = N), 'sp' (Ulysses sp = N), 'cfg' (cfg = 2; needs N = 2 since cfg is at most 2),
'hybrid' (every factorisation of N with at least two axes > 1), 'all' (the four), or an
explicit layout such as 'cfg2xsp2', 'sp4xtp2' (axes not named are 1). Every layout must use all
N ranks: phyx.parallel builds one mesh over the whole world.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

AXES = ("cfg", "sp", "tp")
WORDS = ("tp", "sp", "cfg", "hybrid", "all")
_EXPLICIT = re.compile(r"^(cfg|sp|tp)(\d+)$")


@dataclass(frozen=True)
class Mode:
    """One layout to run, or the reason it is skipped (layout may be None then)."""
    label: str
    layout: tuple[int, int, int] | None       # (cfg, sp, tp)
    skip: str | None = None

    @property
    def guided(self) -> bool:
        """CFG layouts compare the guided prediction (cond and uncond combined)."""
        return self.layout is not None and self.layout[0] > 1


def label_of(layout: tuple[int, int, int]) -> str:
    parts = [f"{a}{n}" for a, n in zip(AXES, layout) if n > 1]
    return "x".join(parts) or "single"


def parse_explicit(word: str) -> tuple[int, int, int]:
    sizes = dict.fromkeys(AXES, 1)
    for part in word.split("x"):
        m = _EXPLICIT.match(part)
        if not m or sizes[m.group(1)] != 1:
            raise ValueError(f"bad mode {word!r}: use {', '.join(WORDS)} or a layout like "
                             f"'cfg2xsp2' / 'sp4xtp2' (each axis once, with its size)")
        sizes[m.group(1)] = int(m.group(2))
        if sizes[m.group(1)] < 1:
            raise ValueError(f"bad mode {word!r}: sizes must be >= 1")
    return sizes["cfg"], sizes["sp"], sizes["tp"]


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
            lay = parse_explicit(w)
            n = lay[0] * lay[1] * lay[2]
            if lay[0] > 2:
                add(Mode(label_of(lay), None, "cfg is at most 2 (cond and uncond)"))
            elif n != world:
                add(Mode(label_of(lay), None, f"layout uses {n} ranks, the world has {world}"))
            else:
                add(Mode(label_of(lay), lay))
    return modes
