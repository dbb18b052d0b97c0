"""`phyx certify`: the first-NPU-contact certificate.

One command for the first Ascend machine (`phyx certify --backend npu --out DIR`) that runs
(a) the op parity matrix against a float64 oracle, (b) one hardware test per fact phyx took from
the documentation without seeing an NPU, (c) tiny-model parity of every family against artifacts
recorded on a GPU and shipped with phyx, (d) the loss-parity window, and writes one report
(markdown + JSON) with a verdict per check and an overall verdict.

On `npu-emulated` the same command is a rehearsal: every line says EMULATED, facts that need the
hardware are UNSETTLED, and nothing is reported as an NPU number.

Modules: verdict (check records, overall verdict), artifacts (what is shipped, the recorder),
sections (op matrix, model parity, loss window), hccl_probe (the
multi-rank HCCL measurements), report (markdown + JSON), run (the orchestration).
"""
from phyx.tools.certify.run import run_certificate

__all__ = ["run_certificate"]
