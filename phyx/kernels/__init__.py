"""phyx.kernels: the kernel contract (spec) shared by the backends and the op table."""
