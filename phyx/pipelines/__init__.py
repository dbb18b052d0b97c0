"""Generation pipelines: `phyx generate` for Wan2.2 / LingBot-World, Cosmos-Predict2 and Cosmos3
(and tiny seeded variants of each), on any backend, one device or cfg x sp x tp ranks.
Model code stays vendor-free: devices through phyx.device, collectives through phyx.comm."""
from phyx.pipelines.generate import GenerateArgs, generate
from phyx.pipelines.registry import SPECS, get_spec, names

__all__ = ["GenerateArgs", "generate", "SPECS", "get_spec", "names"]
