"""Errors phyx raises. Each message names the problem and the fix."""


class PhyxError(RuntimeError):
    """Base class for phyx errors."""


class UnknownBackendError(PhyxError, ValueError):
    pass


class BackendUnavailableError(PhyxError):
    pass


class UnsupportedArgumentError(PhyxError, ValueError):
    """A kernel was asked for something it cannot honour. Never silently dropped."""


class LayoutError(PhyxError, ValueError):
    pass


class ParallelConfigError(PhyxError, ValueError):
    pass


class CheckpointError(PhyxError):
    pass
