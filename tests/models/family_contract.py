"""The test battery every model family gets by subclassing (diffusers' per-model test mixins are
the model):

    class TestWan(FamilyContract):
        family = "wan"

Checks, over the family's tiny models in phyx.models.registry: the adapter satisfies the
FamilyAdapter protocol; the fp32 forward equals diffusers' implementation of the same config with
the same weights (rel L2 < 1e-5, through the adapter's diffusers_peer); a checkpoint written by the
adapter is detected (by the adapter and phyx.models.detect) and loads to the same weights and
output; a bf16 load keeps exactly the adapter's keep_fp32 parameters in fp32; every name and alias
resolves to its canonical name and every config round-trips through its dict; every tiny parity
model is registered in the parity zoo under its canonical name; and, when the family declares a
TP_PLAN / SP_PLAN (phyx.models.<family>.plan), a 2-rank layout on a RankPool gives the
single-device answer. The deeper per-family tests (tests/models/test_<family>*.py) stay: this
battery is the floor a new family must clear, kept small for CI.
"""
from __future__ import annotations

import json

import pytest
import torch

from phyx.models import registry
from phyx.models.family import FamilyAdapter
from phyx.testing import rel_l2

ORACLE_TOL = 1e-5


def _outputs(out) -> dict:
    return out if isinstance(out, dict) else {"out": out}


def _layout_rank(model: str, tp: int, sp: int) -> float:
    """On each rank of a pool: the model's output under ParallelConfig(tp, sp) vs single device."""
    from phyx.parallel import ParallelConfig, init_parallel, reset_parallel_state

    torch.set_num_threads(1)
    entry = registry.resolve(model)
    ad, cfg = entry.adapter, entry.build_config()
    inputs = ad.make_inputs(cfg, 0, **entry.inputs)
    with torch.no_grad():
        ref = _outputs(ad.forward(ad.build(cfg, seed=1), inputs))
        init_parallel(ParallelConfig(tp=tp, sp=sp))
        try:
            got = _outputs(ad.forward(ad.build(cfg, seed=1), inputs))
        finally:
            reset_parallel_state()
    return max(float(rel_l2(got[k], ref[k])) for k in ref)


class FamilyContract:
    family: str = ""
    # the oracle's models: the family's tiny parity models, minus those diffusers cannot express
    oracle_skip: tuple[str, ...] = ()
    layout_model: str | None = None        # tiny model for the parallel-layout hook (default: first)

    # ---- helpers -----------------------------------------------------------------------------------
    @property
    def adapter(self):
        return registry.family(self.family)

    def tiny_entries(self) -> list:
        return [e for e in registry.models(registry.PARITY, family=self.family) if e.tiny]

    def _seeded(self, entry, seed=1):
        cfg = entry.build_config()
        return cfg, self.adapter.build(cfg, seed=seed)

    # ---- the battery -------------------------------------------------------------------------------
    def test_adapter_satisfies_the_protocol(self):
        ad = self.adapter
        assert isinstance(ad, FamilyAdapter), f"{type(ad).__name__} lacks part of FamilyAdapter"
        assert ad.name == self.family and ad.tiny_configs and ad.capture_layers
        assert ad.pipeline.startswith("phyx.pipelines.families.")
        assert registry.FAMILIES[self.family].startswith("phyx.models.")   # in-tree only

    def test_forward_matches_diffusers_fp32(self):
        entries = [e for e in self.tiny_entries() if e.name not in self.oracle_skip]
        assert entries, f"{self.family} has no tiny parity model to check against diffusers"
        pytest.importorskip("diffusers")
        for entry in entries:
            cfg, model = self._seeded(entry)
            inputs = self.adapter.make_inputs(cfg, 0, **entry.inputs)
            peer = self.adapter.diffusers_peer(cfg)
            ref_model = peer.build(torch.float32).eval()
            ref_model.load_state_dict(peer.state_dict(model.state_dict()), strict=True)
            with torch.no_grad():
                got, want = _outputs(self.adapter.forward(model, inputs)), _outputs(peer.forward(ref_model, inputs))
            assert set(got) == set(want), entry.name
            for k in want:
                assert got[k].dtype == torch.float32 and got[k].shape == want[k].shape, (entry.name, k)
                err = float(rel_l2(got[k], want[k]))
                assert err < ORACLE_TOL, f"{entry.name} {k}: relative L2 {err:.2e} vs diffusers"

    def test_checkpoint_round_trip(self, tmp_path):
        import phyx.models as pm

        entry = self.tiny_entries()[0]
        cfg, model = self._seeded(entry, seed=3)
        d = self.adapter.save(model, tmp_path / "ckpt")
        assert self.adapter.detect(d) and pm.detect(d) == self.family
        back = self.adapter.load(d)
        a, b = model.state_dict(), back.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        inputs = self.adapter.make_inputs(cfg, 0, **entry.inputs)
        with torch.no_grad():
            x, y = _outputs(self.adapter.forward(model, inputs)), _outputs(self.adapter.forward(back, inputs))
        assert all(torch.equal(x[k], y[k]) for k in x)
        # a model of another seed is a different checkpoint: the round trip is not vacuous
        other = self.adapter.build(cfg, seed=4).state_dict()
        assert any(not torch.equal(a[k], other[k]) for k in a)

    def test_bf16_keeps_the_fp32_params(self, tmp_path):
        entry = self.tiny_entries()[0]
        _, model = self._seeded(entry)
        d = self.adapter.save(model, tmp_path / "ckpt")
        for m in (self.adapter.load(d, dtype=torch.bfloat16),
                  self.adapter.prepare(self.adapter.build(entry.build_config()), "cpu", torch.bfloat16)):
            for name, p in m.named_parameters():
                want = torch.float32 if self.adapter.keep_fp32(name) else torch.bfloat16
                assert p.dtype == want, f"{name}: {p.dtype}, want {want}"

    def test_names_and_configs_round_trip(self):
        entries = registry.models(family=self.family)
        assert entries
        for e in entries:
            assert registry.canonical(e.name) == e.name and registry.resolve(e.name) is e
            for alias in e.aliases:
                assert registry.canonical(alias) == e.name, alias
            cfg = e.build_config()
            assert isinstance(cfg, self.adapter.config_class)
            d = json.loads(json.dumps(self.adapter.config_to_dict(cfg)))
            assert self.adapter.config_from_dict(d) == cfg, e.name

    def test_parity_zoo_registration(self):
        from phyx.tools.parity.model import get_model_spec, registered_models

        names = set(registered_models())
        for e in self.tiny_entries():
            assert e.name in names, e.name
            for alias in e.aliases:
                spec = get_model_spec(alias, seed=2)
                assert spec.name == e.name, alias     # tools record the canonical name
            spec = get_model_spec(e.name, seed=2)
            again = get_model_spec(e.name, json.loads(json.dumps(spec.config)), 2)
            assert again.config == spec.config and spec.config["family"] == self.family

    # ---- parallel layouts (the plans belong to phyx.models.<family>.plan) ------------------------
    def layouts(self) -> list[tuple[int, int]]:
        """(tp, sp) layouts of 2 ranks the family declares a plan for."""
        ad = self.adapter
        return ([(2, 1)] if ad.tp_plan is not None else []) + ([(1, 2)] if ad.sp_plan is not None else [])

    def test_parallel_layouts_match_single_device(self):
        layouts = self.layouts()
        if not layouts:
            pytest.skip(f"{self.family} declares no TP_PLAN / SP_PLAN (phyx.models.{self.family}.plan)")
        from phyx.testing.multiproc import RankPool

        model = self.layout_model or self.tiny_entries()[0].name
        with RankPool(2, env={"PHYX_BACKEND": "cpu"}, dist_timeout_s=60) as pool:
            for tp, sp in layouts:
                errs = pool.run(_layout_rank, model, tp, sp)
                assert max(errs) < ORACLE_TOL, (model, tp, sp, errs)
