"""The one exception type users see: a one-line message naming the thing at fault and the fix."""

from __future__ import annotations


class VaekitError(Exception):
    """A problem with the user's input, files or settings; the CLI prints it as one line, exit code 2."""


class DataError(VaekitError):
    """A data set that cannot be found, read or used as configured."""


class ConfigError(VaekitError):
    """A configuration value or preset that is unknown or out of range."""


class RunFolderError(VaekitError):
    """A run folder that is missing, incomplete or inconsistent."""


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint; the message says how to resume."""

    def __init__(self, message: str, signal_name: str) -> None:
        super().__init__(message)
        self.signal_name = signal_name
