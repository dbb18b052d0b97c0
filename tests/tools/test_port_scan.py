"""`phyx port scan`: every planted pattern found (and nothing else), nothing on phyx's own
model code, JSON output and a CI exit code."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from phyx.cli import main as phyx_main
from phyx.tools.porting import CATEGORIES, expand, scan_paths, scan_source

REPO = Path(__file__).resolve().parents[2]
TREE = REPO / "tests" / "tools" / "fixtures" / "port_scan_tree"
MARK = re.compile(r"#\s*expect:\s*([a-z0-9, -]+)$")


def planted() -> set[tuple[str, int, str]]:
    out = set()
    for dirpath, _, files in os.walk(TREE):
        for fn in files:
            p = Path(dirpath) / fn
            for i, line in enumerate(p.read_text().splitlines(), 1):
                m = MARK.search(line)
                if m:
                    out |= {(str(p.relative_to(TREE)), i, c.strip()) for c in m.group(1).split(",")}
    return out


def found(report) -> set[tuple[str, int, str]]:
    return {(os.path.relpath(f.path, TREE), f.line, f.category) for f in report.findings}


def test_every_planted_pattern_is_found_and_nothing_else():
    expected = planted()
    report = scan_paths([TREE])
    got = found(report)
    assert not expected - got, f"missed: {sorted(expected - got)}"
    assert not got - expected, f"false positives: {sorted(got - expected)}"
    # every category has at least one planted case, so none is silently untested
    assert {c for _, _, c in expected} == set(CATEGORIES)
    assert report.suppressed == 1   # the `# port-ok` line
    broken = [f for f in report.findings if f.path.endswith("broken_syntax.py")]
    assert broken and all(f.method == "regex" for f in broken)
    assert any(p.endswith("broken_syntax.py") for p in report.regex_fallback)
    for f in report.findings:
        assert f.replacement == CATEGORIES[f.category].replacement and f.source


def test_phyx_own_model_code_reports_nothing():
    dirs = [REPO / d for d in ("phyx/models", "phyx/parallel", "phyx/pipelines") if (REPO / d).exists()]
    report = scan_paths(dirs)
    assert report.findings == [], "\n".join(f"{f.path}:{f.line} [{f.category}] {f.source}"
                                            for f in report.findings)
    assert not report.regex_fallback


@pytest.mark.parametrize("src,cats", [
    ('"""runs on cuda: torch.cuda.synchronize()"""\nx = 1\n', set()),          # docstring
    ("import torch\nt = torch.arange(4, dtype=torch.float64)\ny = t.double()\n", set()),  # host
    ("import torch\ndef f(x):\n    return x.cpu().to(torch.float64)\n", set()),
    ("import torch\ndef f(x, d):\n    return torch.zeros(2, dtype=torch.float64, device=d)\n",
     {"float64-on-device"}),
    ("from torch.nn import functional as Q\ndef f(x):\n    return Q.gelu(x)\n", {"native-gelu"}),
    ("import phyx.ops\ndef f(x):\n    return phyx.ops.gelu(x, 'tanh')\n", set()),
    ("from torch import cuda\ncuda.synchronize()\n", {"cuda-api"}),
    ("import torch\nx = torch.ones(2)\ny = x.cuda()  # port-ok: why\n", set()),
    ("import torch\nmode = 'cudagraphs'\nz = 'nccl_like'\n", set()),
])
def test_scanner_cases(src, cats):
    assert {f.category for f in scan_source(src)} == cats


def test_cli_json_and_exit_codes(capsys):
    rc = phyx_main(["port", "scan", str(TREE), "--json", "--fail-on", "cuda-only"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["failing"] > 0
    assert {(os.path.relpath(f["path"], TREE), f["line"], f["category"]) for f in out["findings"]} == planted()
    assert out["counts"]["flash-attn"] == sum(1 for *_, c in planted() if c == "flash-attn")
    # only traps fail: planted_misc has some, pkg/ has none
    assert phyx_main(["port", "scan", str(TREE / "pkg"), "--fail-on", "numerical-trap"]) == 0
    assert phyx_main(["port", "scan", str(TREE / "pkg"), "--fail-on", "cuda-extension"]) == 1
    assert phyx_main(["port", "scan", str(TREE), "--exclude", "pkg", "--exclude", "*.sh",
                      "--exclude", "planted_misc.py", "--exclude", "upstream_block.py",
                      "--exclude", "broken_syntax.py", "--fail-on", "any"]) == 0
    capsys.readouterr()
    assert phyx_main(["port", "scan", str(TREE), "--fail-on", "cudnn"]) == 2
    assert phyx_main(["port", "scan", str(TREE / "missing")]) == 2
    assert "unknown category 'cudnn'" in capsys.readouterr().err


def test_expand_groups():
    assert expand("any") == set(CATEGORIES)
    assert "native-gelu" in expand("numerical-trap") and "native-gelu" not in expand("cuda-only")


def test_console_command_text_output():
    r = subprocess.run([sys.executable, "-m", "phyx.cli", "port", "scan", str(TREE / "launch.sh")],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "launch.sh:3:" in r.stdout and "[cuda-env]" in r.stdout
    assert "4 finding(s) in 1 file(s)" in r.stdout
