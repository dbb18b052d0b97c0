"""phyx.parity: tell whether, and where, a run on one backend departs from another.

Op level:    run_op_parity / `phyx parity ops`
Model level: capture (hooks), record/compare artifacts, first-divergence replay,
             run_model_parity, loss parity, reports.
Submodules import lazily so `import phyx.parity` stays cheap.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "compare": "phyx.parity.metrics", "verdict": "phyx.parity.metrics",
    "threshold_for": "phyx.parity.metrics", "drift_metrics": "phyx.parity.metrics",
    "run_op_parity": "phyx.parity.ops_report",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'phyx.parity' has no attribute {name!r}")
