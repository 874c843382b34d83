"""Solve a task's instances with one program: reuse a validated one, or plan a new one.

This is what the CLI, the server route and the agent tool call. Planning sees only a
training subset of the instances; the chosen program then serves all of them, which is
where the LLM cost is amortized.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from amortized.llm.base import LLMBackend
from amortized.planners.cost import CostReport, Prices, Usage
from amortized.planners.environments.base import Environment, Instance
from amortized.planners.evaluation import EvaluationReport, evaluate_program_async
from amortized.planners.ipp import PlannerOptions, PlanningResult, ProgramPlanner, RoundRecord
from amortized.planners.library import ProgramEntry, ProgramLibrary
from amortized.planners.sandbox import Sandbox


@dataclass(frozen=True)
class SolveOptions:
    planner: PlannerOptions = field(default_factory=PlannerOptions)
    train_instances: int = 20
    """How many of the instances the planning rounds evaluate programs on."""
    reuse: bool = True
    """Serve a validated library program for the same signature without calling the LLM."""
    min_success_rate: float = 0.5
    """The bar a library program must have met to be reused."""
    min_validated_instances: int = 10
    prices: Prices | None = None


@dataclass(frozen=True)
class SolveReport:
    signature: str
    program: ProgramEntry | None
    reused: bool
    planning: PlanningResult | None
    evaluation: EvaluationReport | None
    usage: Usage
    cost: CostReport
    """LLM cost of this task, spread over the instances it served."""
    wall_s: float

    @property
    def status(self) -> Literal["planned", "reused", "no_program"]:
        if self.program is None:
            return "no_program"
        return "reused" if self.reused else "planned"


class PlannerUnavailableError(RuntimeError):
    """No library program qualifies and no LLM backend was given to plan one."""


async def solve_task(
    env: Environment,
    instances: Sequence[Instance],
    *,
    backend: LLMBackend | None,
    options: SolveOptions | None = None,
    library: ProgramLibrary | None = None,
    sandbox: Sandbox | None = None,
    model_name: str = "",
    on_round: Callable[[RoundRecord], None] | None = None,
    progress: bool = False,
) -> SolveReport:
    """Actions and scores for every instance from one (reused or newly planned) program."""
    options = options or SolveOptions()
    sandbox = sandbox or Sandbox()
    started = time.perf_counter()
    usage = Usage()
    planning = None
    program = None
    reused = False
    if options.reuse and library is not None:
        program = library.best(
            env.signature,
            min_success_rate=options.min_success_rate,
            min_instances=options.min_validated_instances,
        )
        reused = program is not None
    if program is None:
        if backend is None:
            raise PlannerUnavailableError(
                f"the program library holds no validated program for {env.signature} and no "
                "model was given to plan one (pass --base-url/--model)"
            )
        planner = ProgramPlanner(
            backend,
            env,
            options=options.planner,
            sandbox=sandbox,
            library=library,
            model_name=model_name,
            on_round=on_round,
        )
        planning = await planner.plan(list(instances[: max(1, options.train_instances)]))
        usage += planning.usage
        program = planning.best
    evaluation = None
    if program is not None:
        evaluation = await evaluate_program_async(
            env,
            program.source,
            list(instances),
            mode="act" if program.entrypoint == "act" else "solve",
            sandbox=sandbox,
            progress=progress,
        )
    return SolveReport(
        signature=env.signature,
        program=program,
        reused=reused,
        planning=planning,
        evaluation=evaluation,
        usage=usage,
        cost=CostReport.of(usage, len(instances), options.prices),
        wall_s=time.perf_counter() - started,
    )
