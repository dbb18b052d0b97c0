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


class UnknownModelError(PhyxError, KeyError):
    """A model or family name no registry entry knows; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""
