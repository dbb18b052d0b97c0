#!/usr/bin/env python3
"""Vendor-free lint: model, parallel and pipeline code must not touch a vendor directly.

Forbidden there: torch.cuda, .cuda(), torch_npu, flash_attn, apex, transformer_engine and raw
torch.distributed (use phyx.ops, phyx.comm, phyx.device). A line may opt out with
`# vendor-ok: <why>`. Exit 1 with file:line for each hit.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

VENDOR_FREE = ("phyx/models", "phyx/parallel", "phyx/pipelines")
PATTERNS = [
    (re.compile(r"\btorch\.cuda\b"), "torch.cuda (use phyx.device)"),
    (re.compile(r"\.cuda\("), ".cuda() (use .to(phyx.device.torch_device()))"),
    (re.compile(r"\btorch_npu\b"), "torch_npu (vendor code lives in backends/phyx_npu)"),
    (re.compile(r"\bflash_attn(_interface)?\b"), "flash_attn (use phyx.ops.attention)"),
    (re.compile(r"^\s*(import apex|from apex\b)"), "apex (use phyx.ops.rms_norm / layer_norm)"),
    (re.compile(r"\btransformer_engine\b"), "transformer_engine (use phyx.ops)"),
    (re.compile(r"\btorch\.distributed\b|^\s*import torch\.distributed|from torch import distributed"),
     "raw torch.distributed (use phyx.comm)"),
]


def scan(root: Path) -> list[str]:
    hits = []
    for d in VENDOR_FREE:
        for path in sorted((root / d).rglob("*.py")):
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if "# vendor-ok" in line:
                    continue
                code = line.split("#", 1)[0]
                for pat, why in PATTERNS:
                    if pat.search(code):
                        hits.append(f"{path.relative_to(root)}:{i}: {why}: {line.strip()}")
    return hits


def main() -> int:
    # the repository root: the folder holding the phyx package (parents[3] of this file)
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[3]
    if not all((root / d).is_dir() for d in VENDOR_FREE):
        print(f"vendor-free lint: {root} does not hold {', '.join(VENDOR_FREE)}; pass the repository root")
        return 2
    hits = scan(root)
    for h in hits:
        print(h)
    print(f"vendor-free lint: {len(hits)} problem(s) in {', '.join(VENDOR_FREE)}")
    return 1 if hits else 0


if __name__ == "__main__":
    sys.exit(main())
