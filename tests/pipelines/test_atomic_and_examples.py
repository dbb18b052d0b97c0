import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from phyx.io.atomic import atomic_path, write_text_atomic

EXAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lingbot-world-examples"


def test_atomic_write_leaves_no_temp_and_normal_permissions(tmp_path):
    p = tmp_path / "sub" / "x.json"
    write_text_atomic(p, "{}")
    assert p.read_text() == "{}"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
    assert [q.name for q in p.parent.iterdir()] == ["x.json"]


def test_atomic_path_failure_keeps_old_file(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert p.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.skipif(not EXAMPLES.exists(), reason="shared LingBot-World examples not present")
def test_generate_tiny_lingbot_on_a_shipped_trajectory(tmp_path):
    ex = EXAMPLES / "01"
    out = tmp_path / "lb.mp4"
    r = subprocess.run([sys.executable, "-m", "phyx.cli", "generate", "--model", "tiny-lingbot",
                        "--image", str(ex / "image.jpg"), "--camera", str(ex), "--prompt",
                        (ex / "prompt.txt").read_text()[:200], "--steps", "2", "--frames", "9",
                        "--backend", "npu-emulated", "--no-progress", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.stat().st_size > 1000
    import json

    side = json.loads(Path(str(out) + ".json").read_text())
    assert side["backend"]["name"] == "npu-emulated" and side["backend"]["emulated"] is True
    assert str(ex) in json.dumps(side)  # the camera directory is recorded with the run
