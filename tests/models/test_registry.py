"""One table of model names: every tool lists the registry's canonical names, accepts the old
names as aliases and reports the canonical one; unknown names fail with the known ones listed;
the families' adapters load lazily from in-tree modules and read their parallel plans lazily."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from phyx.errors import UnknownModelError
from phyx.models import registry


def test_names_are_unique_and_every_tool_lists_canonical_names():
    from phyx.pipelines import registry as generate_registry
    from phyx.tools.bench.models import MODELS as BENCH
    from phyx.tools.parity.zoo import MODELS as PARITY

    every = [*registry.MODELS, *registry.aliases()]
    assert len(every) == len(set(every))
    assert sorted(generate_registry.names()) == sorted(registry.names(registry.GENERATE))
    assert list(PARITY) == registry.names(registry.PARITY)
    assert list(BENCH) == registry.names(registry.BENCH)
    for name, spec in generate_registry.SPECS.items():
        assert spec.family == registry.resolve(name).family


@pytest.mark.parametrize("alias,canonical", [
    ("tiny-wan-t2v", "tiny-wan"), ("wan-tiny", "tiny-wan"), ("tiny-t2v", "tiny-wan"),
    ("tiny-cosmos-predict2-t2i", "tiny-cosmos-predict2"), ("cosmos-predict2-tiny", "tiny-cosmos-predict2-v2w"),
    ("cosmos3-tiny", "tiny-cosmos3"), ("tiny-cosmos3-video", "tiny-cosmos3"), ("lingbot", "lingbot-world"),
    ("wan2.2-t2v-a14b", "wan2.2-a14b-t2v"), ("wan2.1-1.3b-480p81f", "wan2.1-t2v-1.3b"),
    ("cosmos3-nano-720p", "cosmos3-nano"), ("wan-14b", "wan2.1-t2v-14b")])
def test_old_names_are_aliases(alias, canonical):
    assert registry.canonical(alias) == canonical


def test_each_tool_reports_the_canonical_name():
    harness = str(Path(__file__).resolve().parents[2] / "benchmarks" / "multi_gpu")
    sys.path.insert(0, harness)
    try:
        import mg_models
    finally:
        sys.path.remove(harness)
    from phyx.pipelines import registry as generate_registry
    from phyx.pipelines import tiny
    from phyx.tools.bench.models import model_case
    from phyx.tools.parity.model import get_model_spec

    assert generate_registry.get_spec("tiny-wan-t2v").name == "tiny-wan"
    assert get_model_spec("tiny-wan-t2v").name == "tiny-wan"
    assert mg_models.make_spec("wan-tiny", "tiny").name == "tiny-wan"
    assert model_case("wan2.1-1.3b-480p81f")[0] == "wan2.1-t2v-1.3b"
    assert tiny._recipe_name("tiny-wan-t2v") == "tiny-wan"


def test_unknown_names_list_the_known_ones():
    from phyx.pipelines import registry as generate_registry

    with pytest.raises(UnknownModelError, match="known models: .*tiny-wan"):
        registry.canonical("tiny-wann")
    with pytest.raises(KeyError, match="tiny-wan"):          # phyx generate catches KeyError
        generate_registry.get_spec("tiny-wann")
    with pytest.raises(UnknownModelError, match="is not a model `phyx generate` runs"):
        generate_registry.get_spec("tiny-cosmos3-video-sound")
    with pytest.raises(UnknownModelError, match="known: cosmos-predict2, cosmos3, wan"):
        registry.family("hunyuan")
    with pytest.raises(UnknownModelError, match="known: .*tiny-t2v"):
        registry.family("wan").config("tiny-t3v")


def test_adapters_are_lazy_and_in_tree():
    assert all(v.startswith("phyx.models.") and ":" in v for v in registry.FAMILIES.values())
    for name in registry.FAMILIES:
        assert registry.family(name) is registry.family(name)    # one instance, imported once


def test_parallel_plans_are_read_lazily_from_the_family_plan_module(monkeypatch):
    ad = registry.family("cosmos3")
    plan_mod = "phyx.models.cosmos3.plan"
    if plan_mod not in sys.modules:
        try:
            __import__(plan_mod)
        except ModuleNotFoundError:
            assert ad.tp_plan is None and ad.sp_plan is None     # no plan module yet: None
    fake = types.ModuleType(plan_mod)
    fake.TP_PLAN = {"layers.*.self_attn.q_proj": "colwise"}
    monkeypatch.setitem(sys.modules, plan_mod, fake)
    assert ad.tp_plan == fake.TP_PLAN and ad.sp_plan is None
