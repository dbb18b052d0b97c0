import json

import pytest
import torch

from phyx.errors import CheckpointError
from phyx.io import checkpoint as ck
from phyx.sharding import ShardSpec, mark


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 6)
        self.b = torch.nn.Linear(6, 3, bias=False)


def _state(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(6, 4, generator=g), "a.bias": torch.randn(6, generator=g),
            "b.weight": torch.randn(3, 6, generator=g)}


def test_single_file_roundtrip_and_dtype(tmp_path):
    sd = _state()
    ck.save_safetensors_atomic(sd, tmp_path / "m.safetensors")
    m = Tiny()
    ck.load_state(m, ck.open_checkpoint(tmp_path / "m.safetensors"))
    assert torch.equal(m.a.weight, sd["a.weight"])
    m16 = Tiny().to(torch.bfloat16)
    ck.load_state(m16, ck.open_checkpoint(tmp_path / "m.safetensors"))
    assert m16.b.weight.dtype == torch.bfloat16
    assert torch.equal(m16.b.weight, sd["b.weight"].to(torch.bfloat16))
    assert not list(tmp_path.glob("*.tmp"))


def test_sharded_index_and_missing_shard(tmp_path):
    sd = _state()
    paths = ck.save_sharded(sd, tmp_path, max_shard_bytes=100)
    assert len(paths) >= 2
    m = Tiny()
    ck.load_state(m, ck.open_checkpoint(tmp_path))
    assert torch.equal(m.a.bias, sd["a.bias"])
    paths[-1].unlink()
    with pytest.raises(CheckpointError, match="missing shard"):
        ck.open_checkpoint(tmp_path)


def test_corrupt_shard_is_named(tmp_path):
    ck.save_safetensors_atomic(_state(), tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        ck.load_state(Tiny(), ck.open_checkpoint(tmp_path / "m.safetensors"))


def test_strict_key_report(tmp_path):
    sd = _state()
    sd["extra.weight"] = torch.zeros(1)
    del sd["b.weight"]
    ck.save_safetensors_atomic(sd, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError) as e:
        ck.load_state(Tiny(), ck.open_checkpoint(tmp_path / "m.safetensors"))
    assert "missing (1)" in str(e.value) and "b.weight" in str(e.value)
    assert "unexpected (1)" in str(e.value) and "extra.weight" in str(e.value)
    out = ck.load_state(Tiny(), ck.open_checkpoint(tmp_path / "m.safetensors"), strict=False)
    assert out["missing"] == ["b.weight"] and out["unexpected"] == ["extra.weight"]


def test_rename_and_ignore(tmp_path):
    sd = {"net." + k: v for k, v in _state().items()}
    sd["net.logvar"] = torch.zeros(1)
    ck.save_safetensors_atomic(sd, tmp_path / "m.safetensors")
    m = Tiny()
    ren = lambda k: None if k == "net.logvar" else k.removeprefix("net.")  # noqa: E731
    out = ck.load_state(m, ck.open_checkpoint(tmp_path / "m.safetensors"), rename=ren)
    assert out["ignored"] == ["net.logvar"]


def test_rank_local_slices_with_sections(tmp_path):
    full = torch.arange(8 * 3, dtype=torch.float32).view(8, 3)  # [gate(4) | up(4)] rows
    ck.save_safetensors_atomic({"w": full}, tmp_path / "m.safetensors")
    r = ck.open_checkpoint(tmp_path / "m.safetensors")
    spec = ShardSpec(dim=0, rank=1, size=2, sections=(4, 4))
    got = r.get_sharded("w", spec)
    assert torch.equal(got, torch.cat([full[2:4], full[6:8]]))
    assert torch.equal(got, spec.take(full))

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(4, 3))
            mark(self.w, spec)

    m = M()
    ck.load_state(m, r)
    assert torch.equal(m.w, got)


def test_pickles_refused(tmp_path):
    p = tmp_path / "model.pt"
    p.write_bytes(b"not really")
    with pytest.raises(CheckpointError, match="phyx convert"):
        ck.open_checkpoint(p)
    with pytest.raises(CheckpointError, match="phyx convert"):
        ck.open_checkpoint(tmp_path)


def test_bad_index(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"nope": 1}))
    with pytest.raises(CheckpointError, match="weight_map"):
        ck.open_checkpoint(tmp_path)
