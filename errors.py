"""The project's exceptions.  Imports nothing of the project, so that every package can raise them.

main.py turns a :class:`UserError` into one line ``error: ...`` and exit code 1, and a :class:`TrainingInterrupted`
into its message and exit code 128 + the signal number.  Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix (bad flag, config, data or path).  main.py prints it as one line and exits 1."""


class ConfigError(UserError):
    """A config value (or a combination of values) that cannot work."""


class NonFiniteLoss(UserError):
    """Training produced a non-finite loss or non-finite weights; the last good checkpoint is kept."""


class TrainingInterrupted(Exception):
    """Raised after a clean stop on SIGINT/SIGTERM; ``exit_code`` is 128 + the signal number."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


def is_allocation_error(error):
    """True for a failed memory allocation (host or device), which must not be reported as, say, missing data."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text
                                                 or "failed to allocate" in text)
