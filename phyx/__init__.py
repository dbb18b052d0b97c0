"""phyx: one codebase for world models on NVIDIA GPUs and Huawei Ascend NPUs."""
from phyx import ops  # noqa: F401
from phyx.backend import get_backend, get_policy, selection_reason, set_backend, set_policy

__version__ = "0.1.0"
__all__ = ["set_backend", "get_backend", "set_policy", "get_policy", "selection_reason", "ops"]
