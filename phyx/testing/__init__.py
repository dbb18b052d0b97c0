"""Test helpers shared across phyx's test suites (multi-process rank pools)."""
