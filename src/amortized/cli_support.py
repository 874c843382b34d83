"""What every ``amortized`` subcommand shares: one-line argument errors and JSON options.

Its own module so that the top-level CLI and each capability's ``cli`` module import it
without importing each other.
"""

import argparse
import json
from typing import Any, NoReturn

from amortized.errors import AmortizedError


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (no usage dump), pointing at --help."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments"):
            message += "; vLLM options go after `--` (amortized serve MODEL -- --max-model-len 512)"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def json_object_option(value: str, flag: str) -> dict[str, Any]:
    """A command-line option holding a JSON object, or a one-line error naming ``flag``."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise AmortizedError(f"{flag} is not JSON ({error.msg} at {error.pos})") from error
    if not isinstance(parsed, dict):
        raise AmortizedError(f"{flag} must be a JSON object")
    return parsed
