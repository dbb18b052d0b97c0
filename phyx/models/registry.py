"""The one table of model families and model names.

FAMILIES maps a family name to the "module:Class" of its adapter (phyx/models/<family>/adapter.py,
see phyx.models.family.FamilyAdapter). Modules are imported lazily, on first use, and only
from this in-tree table: nothing read from a file or the command line is ever imported.

MODELS lists every model name users, tests and tools use: one canonical name per model, the
family, the config it builds (a key of the adapter's `configs` or `tiny_configs`), its aliases
(old names kept working; every tool prints the canonical one), the tools that run it and the
input options of its parity / oracle case. `phyx generate --list-models`, the parity zoo, the
model benchmarks and the multi-GPU harness all loop over this table.

Adding a family: one package phyx/models/<family>/ with adapter.py, one FAMILIES line, and its
MODELS lines (see docs/architecture.md, "Model families").
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from phyx.errors import UnknownModelError

__all__ = ["FAMILIES", "MODELS", "ModelEntry", "family", "families", "resolve", "canonical", "models",
           "names", "aliases"]

FAMILIES: dict[str, str] = {
    "wan": "phyx.models.wan.adapter:WanAdapter",
    "cosmos-predict2": "phyx.models.cosmos_predict2.adapter:Predict2Adapter",
    "cosmos3": "phyx.models.cosmos3.adapter:Cosmos3Adapter",
}

GENERATE, PARITY, BENCH, MULTI_GPU = "generate", "parity", "bench", "multi_gpu"
TOOLS = (GENERATE, PARITY, BENCH, MULTI_GPU)


@dataclass(frozen=True)
class ModelEntry:
    name: str                          # canonical
    family: str
    config: str                        # key of the adapter's configs / tiny_configs
    aliases: tuple[str, ...] = ()
    tools: tuple[str, ...] = (GENERATE,)
    inputs: dict = field(default_factory=dict, hash=False)   # make_inputs options (parity, oracle)
    description: str = ""

    @property
    def adapter(self):
        return family(self.family)

    @property
    def tiny(self) -> bool:
        return self.config in self.adapter.tiny_configs

    def build_config(self, **overrides):
        """The entry's config, with `overrides` (dataclasses.replace) applied."""
        cfg = self.adapter.config(self.config)
        return cfg.replace(**overrides) if overrides else cfg


def _m(name, fam, config, *aliases, tools=(GENERATE,), inputs=None, description=""):
    return ModelEntry(name, fam, config, tuple(aliases), tuple(tools), dict(inputs or {}), description)


_ALL_TINY = (GENERATE, PARITY, MULTI_GPU)
MODELS: dict[str, ModelEntry] = {e.name: e for e in [
    # ---- Wan2.1 / Wan2.2 / LingBot-World -------------------------------------------------------
    _m("wan2.1-t2v-1.3b", "wan", "wan2.1-t2v-1.3b", "wan-1.3b", "wan2.1-1.3b-480p81f",
       tools=(BENCH, MULTI_GPU), description="Wan2.1 T2V-1.3B"),
    _m("wan2.1-t2v-14b", "wan", "wan2.1-t2v-14b", "wan-14b", "wan2.1-14b-480p81f",
       tools=(BENCH, MULTI_GPU), description="Wan2.1 T2V-14B"),
    _m("wan2.1-i2v-14b", "wan", "wan2.1-i2v-14b", tools=(), description="Wan2.1 I2V-14B"),
    _m("wan2.2-ti2v", "wan", "wan2.2-ti2v-5b", "wan2.2-ti2v-5b",
       description="Wan2.2 TI2V-5B, text or text+image to video"),
    _m("wan2.2-t2v", "wan", "wan2.2-ti2v-5b", description="Wan2.2 TI2V-5B as text-to-video"),
    _m("wan2.2-i2v", "wan", "wan2.2-ti2v-5b", description="Wan2.2 TI2V-5B as image-to-video"),
    _m("wan2.2-a14b-t2v", "wan", "wan2.2-t2v-a14b", "wan2.2-t2v-a14b", description="Wan2.2 T2V-A14B (two experts)"),
    _m("wan2.2-a14b-i2v", "wan", "wan2.2-i2v-a14b", "wan2.2-i2v-a14b", description="Wan2.2 I2V-A14B (two experts)"),
    _m("lingbot-world", "wan", "lingbot-world", "lingbot",
       description="LingBot-World: Wan2.2 I2V-A14B with camera control"),
    _m("tiny-wan", "wan", "tiny-t2v", "tiny-wan-t2v", "wan-tiny", "tiny-t2v", tools=_ALL_TINY,
       description="tiny Wan T2V (Wan2.1 VAE)"),
    _m("tiny-wan-i2v", "wan", "tiny-i2v", "tiny-i2v", tools=(GENERATE, PARITY),
       description="tiny Wan I2V (latent + mask concatenated, as A14B I2V)"),
    _m("tiny-wan-ti2v", "wan", "tiny-ti2v", "tiny-ti2v", tools=(GENERATE, PARITY),
       description="tiny Wan2.2 TI2V (Wan2.2 VAE, first-frame latent + per-token timesteps)"),
    _m("tiny-wan-a14b", "wan", "tiny-t2v", "tiny-wan-a14b-t2v", description="tiny Wan2.2 A14B T2V (two experts)"),
    _m("tiny-wan-a14b-i2v", "wan", "tiny-i2v", description="tiny Wan2.2 A14B I2V (two experts)"),
    _m("tiny-lingbot", "wan", "tiny-lingbot", tools=(GENERATE, PARITY),
       description="tiny LingBot-World (two experts + camera control)"),
    # ---- Cosmos-Predict2 -----------------------------------------------------------------------
    _m("cosmos-predict2-2b", "cosmos-predict2", "2B-Video2World", tools=(GENERATE, MULTI_GPU),
       description="Cosmos-Predict2 2B (Text2Image / Video2World checkpoint)"),
    _m("cosmos-predict2-2b-t2i", "cosmos-predict2", "2B-Text2Image", "cosmos-predict2-2b-720p93f",
       tools=(BENCH,), description="Cosmos-Predict2 2B Text2Image"),
    _m("cosmos-predict2-14b", "cosmos-predict2", "14B-Video2World", tools=(GENERATE, MULTI_GPU),
       description="Cosmos-Predict2 14B"),
    _m("tiny-cosmos-predict2", "cosmos-predict2", "tiny-text2image", "tiny-cosmos-predict2-t2i",
       tools=(GENERATE, PARITY), description="tiny Cosmos-Predict2 Text2Image"),
    _m("tiny-cosmos-predict2-v2w", "cosmos-predict2", "tiny-video2world", "cosmos-predict2-tiny",
       tools=_ALL_TINY, description="tiny Cosmos-Predict2 Video2World"),
    # ---- Cosmos3 -------------------------------------------------------------------------------
    _m("cosmos3-nano", "cosmos3", "nano", "cosmos3-nano-720p", tools=(GENERATE, BENCH, MULTI_GPU),
       description="Cosmos3 Nano omni (text/image to video, text to audio+video)"),
    _m("tiny-cosmos3", "cosmos3", "tiny", "cosmos3-tiny", "tiny-cosmos3-video", tools=_ALL_TINY,
       description="tiny Cosmos3 omni (t2v, i2v, t2av with a tiny sound decoder)"),
    _m("tiny-cosmos3-video-sound", "cosmos3", "tiny", tools=(PARITY,), inputs={"sound": True},
       description="tiny Cosmos3 with a sound stream (parity case)"),
]}

_ALIASES: dict[str, str] = {a: e.name for e in MODELS.values() for a in e.aliases}
_adapters: dict[str, object] = {}


def _check_table() -> None:
    names = set(MODELS)
    clash = names & set(_ALIASES)
    if clash or len(_ALIASES) != sum(len(e.aliases) for e in MODELS.values()):
        raise AssertionError(f"model names and aliases must be unique; clash: {sorted(clash)}")


_check_table()


def family(name: str):
    """The adapter of family `name` (imported on first use from the FAMILIES table)."""
    if name not in FAMILIES:
        raise UnknownModelError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))} "
                                f"(add it to phyx.models.registry.FAMILIES)")
    if name not in _adapters:
        mod, _, cls = FAMILIES[name].partition(":")
        _adapters[name] = getattr(importlib.import_module(mod), cls)()
    return _adapters[name]


def families() -> list:
    return [family(n) for n in FAMILIES]


def canonical(name: str) -> str:
    """The canonical name of model `name` (itself or an alias); UnknownModelError lists the known."""
    if name in MODELS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))} "
                            f"(aliases: {', '.join(sorted(_ALIASES))})")


def resolve(name: str) -> ModelEntry:
    return MODELS[canonical(name)]


def models(tool: str | None = None, family: str | None = None) -> list[ModelEntry]:
    """Every entry (in table order), optionally only those a tool runs / of one family."""
    if tool is not None and tool not in TOOLS:
        raise UnknownModelError(f"unknown tool {tool!r}; known: {', '.join(TOOLS)}")
    return [e for e in MODELS.values()
            if (tool is None or tool in e.tools) and (family is None or e.family == family)]


def names(tool: str | None = None) -> list[str]:
    return [e.name for e in models(tool)]


def aliases() -> dict[str, str]:
    """alias -> canonical name."""
    return dict(_ALIASES)
