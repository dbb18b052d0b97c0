"""Check records and the overall verdict of a certificate."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

PASS, FAIL, UNSETTLED, SKIPPED = "PASS", "FAIL", "UNSETTLED", "SKIPPED"
VERDICTS = (PASS, FAIL, UNSETTLED, SKIPPED)


@dataclass
class Check:
    section: str          # "ops", "facts", "models", "loss"
    name: str
    fact: str             # what is being settled, in one sentence
    verdict: str
    reason: str = ""
    emulated: bool = False
    measured: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        tag = " (EMULATED)" if self.emulated else ""
        why = f": {self.reason}" if self.reason else ""
        return f"[{self.verdict}{tag}] {self.name} -- {self.fact}{why}"


def emulated_unsettled(check: Check) -> Check:
    """A fact that needs the hardware, measured on the emulator: never a PASS. The rehearsal's own
    verdict is kept in `measured` (it proves the check's code, not the NPU)."""
    if not check.emulated or check.verdict == SKIPPED:
        return check
    check.measured = {**check.measured, "rehearsal_verdict": check.verdict}
    rehearsal = f"rehearsal on the emulator: {check.verdict}" + (f" ({check.reason})" if check.reason else "")
    return Check(check.section, check.name, check.fact, UNSETTLED,
                 f"emulated: needs a real NPU; {rehearsal}", True, check.measured)


def overall(checks: list[Check], emulated: bool) -> dict:
    counts = {v: sum(c.verdict == v for c in checks) for v in VERDICTS}
    verdict = FAIL if counts[FAIL] else PASS
    if emulated:
        label = (f"EMULATED {verdict}: a rehearsal on the CPU emulation of torch_npu; it proves the "
                 f"translation and the certificate's machinery, never NPU numerics")
    elif counts[UNSETTLED] or counts[SKIPPED]:
        label = (f"{verdict} with {counts[UNSETTLED]} unsettled and {counts[SKIPPED]} skipped checks "
                 f"(see their reasons)")
    else:
        label = verdict
    return {"verdict": verdict, "emulated": emulated, "npu_result": not emulated,
            "counts": counts, "label": label}
