"""Test helpers shared across phyx's test suites: rank pools, fake backends, rel_l2, run_cli."""
from phyx.testing.helpers import clean_env, free_port, rel_l2, run_cli

__all__ = ["rel_l2", "free_port", "clean_env", "run_cli"]
