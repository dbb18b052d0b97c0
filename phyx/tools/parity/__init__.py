"""phyx.tools.parity: tell whether, and where, a run on one backend departs from another.

Op level:    run_op_parity / `phyx parity ops`
Model level: capture (hooks), record/compare artifacts, first-divergence replay,
             run_model_parity, loss parity, reports.
Submodules import lazily so `import phyx.tools.parity` stays cheap.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "compare": "phyx.tools.parity.metrics", "verdict": "phyx.tools.parity.metrics",
    "threshold_for": "phyx.tools.parity.metrics", "drift_metrics": "phyx.tools.parity.metrics",
    "run_op_parity": "phyx.tools.parity.ops_report",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'phyx.tools.parity' has no attribute {name!r}")
