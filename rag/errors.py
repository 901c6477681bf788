"""Errors a user can act on. The CLI turns each into one line on stderr and its exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_ABSTAINED = 3


class RagError(Exception):
    """A failure with a message for the user and, where there is one, the fix."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(RagError):
    """Bad flags, bad input files, a missing or unusable model: the user must change something."""

    exit_code = EXIT_USAGE


class IndexMissing(UsageError):
    """No index where one was expected."""


class IndexBroken(RagError):
    """The published index fails its consistency check; answering from it would mislead."""


class IndexLocked(RagError):
    """Another writer holds the index lock."""


class ModelError(UsageError):
    """A model file that is missing, not GGUF, a git-lfs pointer, or fails to load."""
