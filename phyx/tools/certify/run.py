"""The certificate, end to end: backend check, the four sections, the report."""
from __future__ import annotations

import os
import time

from phyx.tools.certify import artifacts as ART
from phyx.tools.certify import report, sections
from phyx.tools.certify.verdict import overall


def run_certificate(backend: str, out_dir: str, artifacts_dir=None, slow: bool = False,
                    log=print) -> dict:
    """Run every section on `backend` ('npu', or 'npu-emulated' for the rehearsal) and write
    certificate.md / certificate.json (and the section reports) under out_dir. Returns the JSON."""
    import phyx
    from phyx.backend import backend_class, registered_backends
    from phyx.tools.parity.backends import using_backend
    from phyx.tools.parity.determinism import set_determinism

    if backend not in registered_backends() or backend_class(backend).accelerator != "npu":
        raise ART.CertifyError(f"phyx certify --backend {backend!r}: the certificate is for the NPU; "
                               f"use --backend npu on an Ascend machine or --backend npu-emulated for "
                               f"the CPU rehearsal")
    root = artifacts_dir or ART.SHIPPED
    manifest = ART.load_manifest(root)
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    with using_backend(backend, "fast") as b:
        emulated = bool(b.emulated)
        set_determinism(b)
        meta = {"backend": b.name, "soc": b.hardware_info(),
                "versions": {**b.versions(), "phyx": phyx.__version__}, "devices": b.describe_devices(),
                "artifacts": {"path": str(root), "recorded_on": manifest["recorded_on"],
                              "recorded_at": manifest.get("recorded_at"), "note": manifest.get("note")}}
        tag = " (EMULATED)" if emulated else ""
        log(f"[certify] backend {b.name}{tag}, SoC {meta['soc'].get('soc', '?')}; reference set "
            f"recorded on {manifest['recorded_on']}")
        checks = []
        log("[certify] (b) hardware facts")
        checks += b.certify_facts(slow=slow)
    meta["seconds"] = {"facts": round(time.perf_counter() - t0, 1)}
    for key, title, fn, args in (("ops", "(a) op parity matrix", sections.op_matrix, ()),
                                 ("models", "(c) tiny-model parity", sections.model_parity, (root, manifest)),
                                 ("loss", "(d) loss-parity window", sections.loss_window, (root, manifest))):
        log(f"[certify] {title}")
        t1 = time.perf_counter()
        got = fn(backend, emulated, *args, out_dir)
        checks = got + checks if key == "ops" else checks + got
        meta["seconds"][key] = round(time.perf_counter() - t1, 1)
    ov = overall(checks, emulated)
    for c in checks:
        log("  " + c.line())
    paths = report.write(out_dir, meta, checks, ov)
    log(f"[certify] {ov['label']}")
    log(f"[certify] report: {paths['markdown']} and {paths['json']}")
    return report.to_json(meta, checks, ov)
