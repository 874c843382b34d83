"""Grid environments for code-policy planners: GRASP and MiniGrid behind one interface.

``make_environment("GRASP", movement=8, carry_limit=2, cost_per_step=0.3)`` or
``make_environment("MiniGrid-DoorKey-8x8-v0")``; MiniGrid loads only when asked for.
"""

import difflib
from typing import Any

from amortized.errors import AmortizedError
from amortized.planners.environments.base import (
    Action,
    Environment,
    EpisodeResult,
    Instance,
    Observation,
)
from amortized.planners.environments.grasp import (
    GraspEnvironment,
    GraspSettings,
    GraspSettingsError,
)
from amortized.planners.environments.grasp_data import GraspDataError
from amortized.planners.environments.minigrid import (
    PAPER_ENV_IDS,
    MiniGridEnvironment,
    MiniGridError,
    minigrid_env_ids,
)

__all__ = [
    "Action",
    "Environment",
    "EpisodeResult",
    "GraspDataError",
    "GraspEnvironment",
    "GraspSettings",
    "GraspSettingsError",
    "Instance",
    "MiniGridEnvironment",
    "MiniGridError",
    "Observation",
    "UnknownEnvironmentError",
    "make_environment",
]

GRASP_SETTINGS = ("movement", "carry_limit", "cost_per_step", "data_dir")


class UnknownEnvironmentError(AmortizedError, ValueError):
    """An environment id that is neither GRASP nor a registered MiniGrid id."""


def make_environment(env_id: str, **settings: Any) -> Environment:
    """``GRASP``/``grasp`` (settings: movement, carry_limit, cost_per_step, data_dir) or any
    registered ``MiniGrid-*`` id (no settings)."""
    if env_id in ("GRASP", "grasp"):
        unknown = sorted(set(settings) - set(GRASP_SETTINGS))
        if unknown:
            raise GraspSettingsError(f"unknown GRASP settings {unknown}; use {GRASP_SETTINGS}")
        data_dir = settings.pop("data_dir", None)
        return GraspEnvironment(GraspSettings(**settings), data_dir=data_dir)
    if env_id.startswith("MiniGrid-"):
        if settings:
            raise MiniGridError(f"MiniGrid environments take no settings, got {sorted(settings)}")
        ids = minigrid_env_ids()
        if env_id not in ids:
            close = difflib.get_close_matches(env_id, ids, n=3, cutoff=0.5)
            raise UnknownEnvironmentError(
                f"unknown environment {env_id!r}"
                + (f" (did you mean {', '.join(close)}?)" if close else "")
                + f"; valid: GRASP, or a MiniGrid id such as {', '.join(PAPER_ENV_IDS)}"
            )
        return MiniGridEnvironment(env_id)
    raise UnknownEnvironmentError(
        f"unknown environment {env_id!r}; valid: GRASP, or a MiniGrid id such as "
        f"{', '.join(PAPER_ENV_IDS)} (any registered MiniGrid-* id)"
    )
