"""The porting kit: `phyx port scan` finds CUDA-only code and numerical traps; the scoped
shims live in phyx_patches (package phyx_patches under patches/)."""
from phyx.tools.porting.rules import CATEGORIES, CUDA_ONLY, TRAP, Category, expand
from phyx.tools.porting.scanner import Finding, ScanReport, scan_paths, scan_source

__all__ = ["CATEGORIES", "CUDA_ONLY", "TRAP", "Category", "expand", "Finding", "ScanReport",
           "scan_paths", "scan_source"]
