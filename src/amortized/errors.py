"""Errors that end a command with one line telling the user what to fix."""


class AmortizedError(Exception):
    """A problem the user can fix; the CLI prints its message alone and exits non-zero."""

    exit_code: int = 2


class ModelError(AmortizedError):
    """A model folder is missing, incomplete or not one vLLM can load."""
