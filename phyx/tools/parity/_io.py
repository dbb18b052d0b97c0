"""Atomic file writes for parity artifacts (the shared implementation lives in phyx.io.atomic)."""
from phyx.io.atomic import write_bytes_atomic as atomic_write_bytes
from phyx.io.atomic import write_text_atomic as atomic_write_text

__all__ = ["atomic_write_bytes", "atomic_write_text"]
