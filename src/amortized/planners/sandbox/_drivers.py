"""Tiny trusted drivers for tests: the worker imports them before its guard, like real ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def echo_driver(function: Callable[[Any], Any], value: Any) -> Any:
    """Call the program once, as if there were no driver."""
    return function(value)


def loop_driver(act: Callable[[Any], Any], spec: dict[str, Any]) -> list[Any]:
    """A closed loop in miniature: ``spec["steps"]`` observations, one ``act`` call each."""
    return [act({"step": step, "goal": spec.get("goal")}) for step in range(int(spec["steps"]))]
