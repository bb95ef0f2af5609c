"""Exceptions that the CLI turns into clear messages and exit codes (no tracebacks).

Exit codes (DESIGN.md): 0 success, 1 the command ran and found problems, 2 bad usage or unusable input.
"""


class VlmtuneError(Exception):
    """Unusable input or bad usage: the CLI prints the message and exits 2."""

    exit_code = 2


class ConfigError(VlmtuneError):
    """A config field is unknown or an invalid combination was asked for."""


class DataError(VlmtuneError):
    """A data file can't be read at all (not a per-record problem)."""


class ModelLoadError(VlmtuneError):
    """A model, adapter or checkpoint folder is missing or not what it claims to be."""


class ProblemsFound(Exception):
    """The command ran and found problems (bad records, failed verification): exit 1."""

    exit_code = 1
