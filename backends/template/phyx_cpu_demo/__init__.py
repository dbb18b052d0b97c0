"""phyx_cpu_demo: the template for a third-party phyx backend.

    pip install ./backends/template
    python -c "import phyx; phyx.set_backend('cpu-demo'); print(phyx.ops.chosen_kernels())"
    PHYX_BACKEND=cpu-demo phyx info
"""
from phyx_cpu_demo.backend import CpuDemoBackend

__all__ = ["CpuDemoBackend"]
