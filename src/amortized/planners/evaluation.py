"""Run one program over many instances in the sandbox and score the output in this process.

The sandbox only executes; everything it returns is untrusted data that the environment
replays and scores here, so a program that tampers with its own process can only hurt its
own score.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from amortized.planners.environments.base import Environment, EpisodeResult, Instance
from amortized.planners.sandbox import CallStatus, Sandbox

PolicyMode = Literal["solve", "act"]
"""``solve(observation) -> actions`` (open loop) or ``act(observation) -> action``."""


class OutcomeStatus(StrEnum):
    OK = "ok"
    """Ran and reached the goal (``success``)."""
    WRONG = "wrong"
    """Ran, but the actions were invalid or did not succeed."""
    TIMEOUT = "timeout"
    ERROR = "error"


@dataclass(frozen=True)
class InstanceOutcome:
    instance_id: str
    status: OutcomeStatus
    score: float
    success: bool
    actions: list[Any] | None = None
    events: tuple[str, ...] = ()
    error: str | None = None
    """Traceback, timeout note or the reason the output could not be replayed."""


@dataclass(frozen=True)
class EvaluationReport:
    """Per-instance outcomes of one program and their aggregates."""

    outcomes: list[InstanceOutcome]
    load_error: str | None = None
    wall_s: float = 0.0
    sandboxed_by: str = ""
    sandbox_mode: str = ""
    """``bubblewrap`` or ``weak``: see docs/sandbox.md."""
    worker_starts: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def mean_score(self) -> float:
        return sum(o.score for o in self.outcomes) / len(self.outcomes) if self.outcomes else 0.0

    @property
    def success_rate(self) -> float:
        if not self.outcomes:
            return 0.0
        return sum(o.success for o in self.outcomes) / len(self.outcomes)

    @property
    def instances_per_s(self) -> float:
        return len(self.outcomes) / self.wall_s if self.wall_s > 0 else 0.0

    def worst(self, k: int) -> list[InstanceOutcome]:
        """The ``k`` lowest-scoring outcomes, failures before merely poor runs."""
        ranked = sorted(self.outcomes, key=lambda o: (o.success, o.score))
        return ranked[:k]


def _outcome(
    call_status: CallStatus,
    value: Any,
    error: str | None,
    episode: EpisodeResult | None,
    instance_id: str,
) -> InstanceOutcome:
    if call_status is CallStatus.TIMEOUT:
        return InstanceOutcome(instance_id, OutcomeStatus.TIMEOUT, 0.0, False, error=error)
    if call_status is not CallStatus.OK or episode is None:
        return InstanceOutcome(instance_id, OutcomeStatus.ERROR, 0.0, False, error=error)
    actions = list(value) if isinstance(value, list) else None
    if episode.invalid_output is not None:
        return InstanceOutcome(
            instance_id,
            OutcomeStatus.WRONG,
            episode.score,
            False,
            actions=actions,
            events=episode.events,
            error=episode.invalid_output,
        )
    status = OutcomeStatus.OK if episode.success else OutcomeStatus.WRONG
    return InstanceOutcome(
        instance_id, status, episode.score, episode.success, actions=actions, events=episode.events
    )


def evaluate_program(
    env: Environment,
    source: str,
    instances: Sequence[Instance],
    *,
    mode: PolicyMode = "solve",
    sandbox: Sandbox | None = None,
    progress: bool = False,
    cancel: threading.Event | None = None,
) -> EvaluationReport:
    """Run ``source`` on every instance in one sandbox worker and score each result."""
    if mode == "act" and env.closed_loop_driver is None:
        raise ValueError(f"{env.env_id} has no closed-loop driver; use mode 'solve'")
    sandbox = sandbox or Sandbox()
    started = time.perf_counter()
    inputs = [i.spec if mode == "act" else i.observation for i in instances]
    run = sandbox.run(
        source,
        inputs,
        entrypoint=mode,
        driver=env.closed_loop_driver if mode == "act" else None,
        progress=progress,
        cancel=cancel,
    )
    outcomes = []
    for instance, call in zip(instances, run.results, strict=True):
        episode = env.evaluate(instance, call.value) if call.status is CallStatus.OK else None
        outcomes.append(
            _outcome(call.status, call.value, call.error, episode, instance.instance_id)
        )
    counts = {s.value: 0 for s in OutcomeStatus}
    for outcome in outcomes:
        counts[outcome.status.value] += 1
    return EvaluationReport(
        outcomes=outcomes,
        load_error=run.load_error,
        wall_s=time.perf_counter() - started,
        sandboxed_by=run.sandboxed_by,
        sandbox_mode=run.mode,
        worker_starts=run.worker_starts,
        counts=counts,
    )


async def evaluate_program_async(
    env: Environment,
    source: str,
    instances: Sequence[Instance],
    **options: Any,
) -> EvaluationReport:
    """:func:`evaluate_program` in a thread, stopped when the awaiting task is cancelled (a
    client that left, a server shutting down): the thread would otherwise run on and keep
    the process alive."""
    cancel = threading.Event()
    try:
        return await asyncio.to_thread(
            evaluate_program, env, source, instances, cancel=cancel, **options
        )
    except asyncio.CancelledError:
        cancel.set()
        raise
