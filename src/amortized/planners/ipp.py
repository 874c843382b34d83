"""Iterative programmatic planning: ask an LLM for a policy program, run it, refine it.

Strategies (arXiv 2505.10749): ``direct`` code generation, ``pseudocode``-conditioned
generation (a greedy BFS outline to use or extend), ``curriculum`` prompting (one
constraint per turn) and iterative ``refine``-ment driven by evaluation feedback. Scores are
not monotone over rounds, so the best program seen is kept, not the last.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from amortized.llm.base import CompletionRequest, LLMBackend, Messages
from amortized.planners import prompts
from amortized.planners.codegen import NoProgramError, extract_program
from amortized.planners.cost import Usage
from amortized.planners.environments.base import Environment, Instance
from amortized.planners.evaluation import EvaluationReport, PolicyMode, evaluate_program_async
from amortized.planners.library import ProgramEntry, ProgramLibrary, program_id
from amortized.planners.sandbox import Sandbox

MIN_COMPLETION_TOKENS = 64
"""Below this many tokens of room no useful program fits; the round is not attempted."""


class Strategy(StrEnum):
    DIRECT = "direct"
    PSEUDOCODE = "pseudocode"
    CURRICULUM = "curriculum"
    REFINE = "refine"


class BudgetTooSmall(ValueError):
    """A token budget that cannot pay for even one round; the message gives the minimum."""


@dataclass(frozen=True)
class PlannerBudget:
    """Limits on one planning run; whichever is reached first stops it."""

    rounds: int = 5
    """Programs requested from the LLM (the first one included)."""
    max_tokens: int | None = None
    """Prompt plus completion tokens over all rounds."""
    wall_time_s: float | None = None
    completion_tokens: int = 2048
    """Per LLM call; lowered automatically to what the context has room for."""


@dataclass(frozen=True)
class PlannerOptions:
    strategy: Strategy = Strategy.REFINE
    budget: PlannerBudget = field(default_factory=PlannerBudget)
    mode: PolicyMode = "solve"
    examples: int = 1
    """Instances rendered into the opening prompt."""
    feedback_instances: int = 3
    """Worst instances shown (rendered with the program's actions) in refinement feedback."""
    pseudocode: bool | None = None
    """Condition on the greedy outline; default: only for the ``pseudocode`` strategy."""
    temperature: float = 0.0


@dataclass(frozen=True)
class RoundRecord:
    """One LLM call and the evaluation of the program it produced."""

    index: int
    stage: str
    program_id: str | None
    mean_score: float | None
    success_rate: float | None
    counts: dict[str, int]
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    wall_s: float


@dataclass(frozen=True)
class PlanningResult:
    signature: str
    strategy: Strategy
    best: ProgramEntry | None
    best_report: EvaluationReport | None
    rounds: list[RoundRecord]
    usage: Usage
    stopped: str
    """Why the loop ended: ``solved``, ``rounds``, ``tokens``, ``wall_time``, ``context``,
    ``llm_error`` or ``strategy`` (a single-shot strategy is done)."""


class _Stop(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class ProgramPlanner:
    """Runs the IPP loop for one environment against any :class:`LLMBackend`."""

    def __init__(
        self,
        backend: LLMBackend,
        env: Environment,
        *,
        options: PlannerOptions | None = None,
        sandbox: Sandbox | None = None,
        library: ProgramLibrary | None = None,
        model_name: str = "",
        on_round: Callable[[RoundRecord], None] | None = None,
    ) -> None:
        self.backend = backend
        self.env = env
        self.options = options or PlannerOptions()
        self.sandbox = sandbox or Sandbox()
        self.library = library
        self.model_name = model_name
        self.on_round = on_round

    async def _ask(self, conversation: Messages, usage: Usage, started: float) -> str:
        budget = self.options.budget
        if budget.wall_time_s is not None and time.monotonic() - started > budget.wall_time_s:
            raise _Stop("wall_time", f"wall-time budget of {budget.wall_time_s:g} s spent")
        if budget.max_tokens is not None and usage.total_tokens >= budget.max_tokens:
            raise _Stop("tokens", f"token budget of {budget.max_tokens} spent")
        prompt_tokens = await self.backend.count_tokens(conversation)
        room = await self.backend.max_model_len() - prompt_tokens
        if room < MIN_COMPLETION_TOKENS:
            raise _Stop(
                "context",
                f"the prompt takes {prompt_tokens} tokens, leaving {room} of the model's "
                "context for the program",
            )
        max_tokens = min(budget.completion_tokens, room)
        if budget.max_tokens is not None:
            left = budget.max_tokens - usage.total_tokens - prompt_tokens
            if left < MIN_COMPLETION_TOKENS:
                raise _Stop("tokens", f"token budget of {budget.max_tokens} spent")
            max_tokens = min(max_tokens, left)
        request = CompletionRequest(
            prompt=conversation,
            max_tokens=max_tokens,
            temperature=self.options.temperature,
            top_p=1.0,
            top_k=None,
            logprobs=0,
        )
        try:
            completion = await self.backend.complete(request)
        except Exception as error:  # any transport or server failure ends the run cleanly
            raise _Stop("llm_error", f"{type(error).__name__}: {error}") from error
        usage.add(completion.prompt_tokens, completion.completion_tokens)
        return completion.text

    async def _check_budget(self, conversation: Messages) -> None:
        """Refuse a token budget smaller than the opening prompt plus a minimal program."""
        limit = self.options.budget.max_tokens
        if limit is None:
            return
        needed = await self.backend.count_tokens(conversation) + MIN_COMPLETION_TOKENS
        if limit < needed:
            raise BudgetTooSmall(
                f"max_tokens={limit} cannot pay for one round: the opening prompt takes "
                f"{needed - MIN_COMPLETION_TOKENS} tokens and a program at least "
                f"{MIN_COMPLETION_TOKENS}; give max_tokens of at least {needed}"
            )

    async def plan(self, instances: Sequence[Instance]) -> PlanningResult:
        """Plan on ``instances`` (the training set) and return the best program found."""
        if not instances:
            raise ValueError("planning needs at least one instance to evaluate programs on")
        options = self.options
        env = self.env
        by_id = {i.instance_id: i for i in instances}
        use_outline = options.pseudocode
        if use_outline is None:
            use_outline = options.strategy is Strategy.PSEUDOCODE
        outline = prompts.pseudocode_for(env) if use_outline else None
        task = prompts.task_prompt(
            env, list(instances[: options.examples]), options.mode, pseudocode=outline
        )
        stages = prompts.curriculum_for(env) if options.strategy is Strategy.CURRICULUM else []
        if stages:
            task += "\n\nWe build the program step by step. " + stages[0]
        rounds_allowed = {
            Strategy.DIRECT: 1,
            Strategy.PSEUDOCODE: 1,
            Strategy.CURRICULUM: max(len(stages), 1),
            Strategy.REFINE: options.budget.rounds,
        }[options.strategy]
        rounds_allowed = min(rounds_allowed, options.budget.rounds)

        usage = Usage()
        records: list[RoundRecord] = []
        best: tuple[str, EvaluationReport] | None = None
        conversation = prompts.messages(task)
        await self._check_budget(conversation)
        stopped = "rounds" if options.strategy is Strategy.REFINE else "strategy"
        started = time.monotonic()
        for index in range(rounds_allowed):
            stage = (
                "initial"
                if index == 0
                else (f"curriculum {index + 1}/{len(stages)}" if stages else "refine")
            )
            round_started = time.monotonic()
            before = Usage(usage.calls, usage.prompt_tokens, usage.completion_tokens)
            try:
                reply = await self._ask(conversation, usage, started)
            except _Stop as stop:
                stopped = stop.reason
                records.append(
                    self._record(index, stage, None, None, str(stop), usage, before, round_started)
                )
                break
            try:
                source = extract_program(reply, options.mode)
            except NoProgramError as error:
                records.append(
                    self._record(index, stage, None, None, str(error), usage, before, round_started)
                )
                follow = (
                    f"Your reply contained no usable program: {error}. Reply with one complete "
                    f"Python program in a ```python block that defines `{options.mode}`."
                )
                conversation = prompts.messages(task, reply[:4000], follow)
                continue
            report = await evaluate_program_async(
                env,
                source,
                list(instances),
                mode=options.mode,
                sandbox=self.sandbox,
            )
            records.append(
                self._record(
                    index, stage, source, report, report.load_error, usage, before, round_started
                )
            )
            if best is None or (report.mean_score, report.success_rate) > (
                best[1].mean_score,
                best[1].success_rate,
            ):
                best = (source, report)
            if self._solved(report):
                stopped = "solved"
                break
            fenced = f"```python\n{source}```"
            if stages and index + 1 < len(stages):
                follow = (
                    prompts.feedback_prompt(env, report, by_id, worst=1)
                    + f"\n\nNext step: {stages[index + 1]}"
                )
            else:
                follow = prompts.feedback_prompt(
                    env, report, by_id, worst=options.feedback_instances
                )
                if best[0] != source:
                    follow += (
                        f"\nYour best program so far scored {best[1].mean_score:.3f} "
                        f"(success {best[1].success_rate:.1%})."
                    )
            conversation = prompts.messages(task, fenced, follow)

        entry = None
        if best is not None:
            source, report = best
            entry = ProgramEntry(
                signature=env.signature,
                source=source,
                entrypoint=options.mode,
                mean_score=report.mean_score,
                success_rate=report.success_rate,
                instances_evaluated=len(report.outcomes),
                strategy=options.strategy.value,
                model=self.model_name,
            )
            if self.library is not None and report.load_error is None:
                self.library.add(entry)
        return PlanningResult(
            signature=env.signature,
            strategy=options.strategy,
            best=entry,
            best_report=best[1] if best else None,
            rounds=records,
            usage=usage,
            stopped=stopped,
        )

    def _solved(self, report: EvaluationReport) -> bool:
        """Succeeding everywhere ends refinement early where success means reaching the goal
        (MiniGrid); GRASP counts any positive score as success and has no known optimum, so
        there every round runs."""
        return self.env.max_score is not None and report.success_rate >= 1.0

    def _record(
        self,
        index: int,
        stage: str,
        source: str | None,
        report: EvaluationReport | None,
        error: str | None,
        usage: Usage,
        before: Usage,
        started: float,
    ) -> RoundRecord:
        record = RoundRecord(
            index=index,
            stage=stage,
            program_id=program_id(source) if source is not None else None,
            mean_score=report.mean_score if report else None,
            success_rate=report.success_rate if report else None,
            counts=dict(report.counts) if report else {},
            error=error,
            prompt_tokens=usage.prompt_tokens - before.prompt_tokens,
            completion_tokens=usage.completion_tokens - before.completion_tokens,
            wall_s=time.monotonic() - started,
        )
        if self.on_round is not None:
            self.on_round(record)
        return record
