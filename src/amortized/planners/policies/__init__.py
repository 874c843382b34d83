"""Reference policy programs, written the way an LLM would write them (stdlib only).

Each is plain source with a module-level ``solve(observation)`` (and ``act``), so it can be
sent to the sandbox as text (``reference_policy_source``) or imported directly
(``load_reference_policy``) for baselines and tests.
"""

import importlib
import importlib.resources
from collections.abc import Callable
from typing import Any

from amortized.errors import AmortizedError

REFERENCE_POLICIES = ("grasp_greedy", "grasp_nearest", "minigrid_bfs", "random_policy")


class UnknownPolicyError(AmortizedError, ValueError):
    """No reference policy by that name."""


def _check(name: str) -> None:
    if name not in REFERENCE_POLICIES:
        raise UnknownPolicyError(
            f"unknown reference policy {name!r}; choose from {list(REFERENCE_POLICIES)}"
        )


def reference_policy_source(name: str) -> str:
    """The program text of a reference policy, as the sandbox receives LLM programs."""
    _check(name)
    return importlib.resources.files(__name__).joinpath(f"{name}.py").read_text("utf-8")


def load_reference_policy(name: str, entry: str = "solve") -> Callable[..., Any]:
    """The policy's ``solve`` (or ``act``) function, imported in this process."""
    _check(name)
    module = importlib.import_module(f"{__name__}.{name}")
    function = getattr(module, entry, None)
    if not callable(function):
        raise UnknownPolicyError(f"reference policy {name!r} has no {entry}()")
    return function  # type: ignore[no-any-return]
