"""The porting kit: `phyx port scan` finds CUDA-only code and numerical traps; the scoped
shims live in phyx.patches (package phyx_patches under patches/)."""
from phyx.porting.rules import CATEGORIES, CUDA_ONLY, TRAP, Category, expand
from phyx.porting.scanner import Finding, ScanReport, scan_paths, scan_source

__all__ = ["CATEGORIES", "CUDA_ONLY", "TRAP", "Category", "expand", "Finding", "ScanReport",
           "scan_paths", "scan_source"]
