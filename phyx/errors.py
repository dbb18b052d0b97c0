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


class InputError(PhyxError, ValueError):
    """Data read from disk (or handed in) that phyx refuses: the wrong type or structure, out of
    range, over a size cap, not a regular file, or a path that leaves its directory."""


class ConfigError(InputError, CheckpointError):
    """A model configuration that cannot describe a model phyx may build."""


class OutputError(PhyxError):
    """phyx refuses to write: the target is not a regular file, or it is something phyx did not
    write and must not replace."""


class UnknownModelError(PhyxError, KeyError):
    """A model or family name no registry entry knows; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""
