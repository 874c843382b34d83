"""What every grid environment offers the planners: instances, prompts, trusted scoring.

Programs never see environment objects: they get a JSON-serializable observation (so it can
cross into the sandbox) and return actions, which the trusted parent replays and scores.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Observation = dict[str, Any]
"""A JSON-serializable structured state handed to policy programs."""

Action = str | int
"""One action as a program returns it; each environment names its valid actions."""


@dataclass(frozen=True)
class Instance:
    """One task instance: what a program sees and what the environment needs to score it."""

    instance_id: str
    observation: Observation
    spec: dict[str, Any] = field(default_factory=dict)
    """JSON-serializable data to rebuild the instance (seed, grid, settings), for the
    closed-loop driver inside the sandbox and for scoring."""


@dataclass(frozen=True)
class EpisodeResult:
    """The trusted outcome of replaying a program's actions on one instance."""

    instance_id: str
    score: float
    success: bool
    actions_taken: int
    events: tuple[str, ...] = ()
    """Notable moments in the replay ("step 3: take on an empty cell (5, 3)"), for feedback."""
    invalid_output: str | None = None
    """Why the program's return value could not be replayed at all (not a list, unknown action)."""


class Environment(abc.ABC):
    """A grid task family with fixed settings: one program library entry per signature."""

    env_id: str
    """E.g. ``MiniGrid-DoorKey-8x8-v0`` or ``GRASP``."""

    @property
    @abc.abstractmethod
    def signature(self) -> str:
        """Environment plus settings (``GRASP/move8-carry2-cost0.3``): the program-library key."""

    @property
    @abc.abstractmethod
    def action_names(self) -> tuple[str, ...]:
        """The actions a program may return, in the environment's canonical spelling."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Rules, observation schema and action list, written for an LLM writing a policy."""

    @abc.abstractmethod
    def instances(self, count: int, *, seed: int = 0) -> list[Instance]:
        """``count`` reproducible instances (generated, or read from a benchmark file)."""

    @abc.abstractmethod
    def render(self, instance: Instance, actions: Sequence[Action] | None = None) -> str:
        """The instance as text for prompts; with ``actions``, also where they led."""

    @abc.abstractmethod
    def evaluate(self, instance: Instance, actions: object) -> EpisodeResult:
        """Replay ``actions`` (untrusted program output) on ``instance`` and score them."""

    def instance_from_spec(self, spec: dict[str, Any], instance_id: str | None = None) -> Instance:
        """Rebuild an instance from user-supplied JSON (GRASP: ``{"grid": rows}``; MiniGrid:
        ``{"seed": s}``); raises :class:`ValueError` saying what is wrong with it."""
        raise NotImplementedError(f"{type(self).__name__} cannot build instances from JSON")

    closed_loop_driver: str | None = None
    """``module:function`` run inside the sandbox to roll out an ``act(observation)`` policy:
    ``driver(act, instance_spec) -> list[action]``; ``None`` when only ``solve`` is offered."""

    max_score: float | None = None
    """The best possible score when known (MiniGrid: 1.0), for reporting."""
