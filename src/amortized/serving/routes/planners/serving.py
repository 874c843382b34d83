"""Planner route logic: a task and its instances → one program's actions, scores and cost."""

from collections.abc import Sequence

import httpx
import openai

from amortized.llm.base import LLMBackend
from amortized.planners.cost import Prices
from amortized.planners.environments import Instance, make_environment
from amortized.planners.environments.base import Environment
from amortized.planners.ipp import BudgetTooSmall, PlannerBudget, PlannerOptions, Strategy
from amortized.planners.library import ProgramLibrary
from amortized.planners.sandbox import Sandbox, SandboxError
from amortized.planners.solver import SolveOptions, SolveReport, solve_task
from amortized.serving.outbound import ALLOWED_LLM_URLS_ENV, is_allowed
from amortized.serving.routes.planners.protocol import (
    CostSummary,
    GridInstance,
    InstanceResult,
    PlannerSolveRequest,
    PlannerSolveResponse,
    RoundSummary,
)


class PlannerRequestError(ValueError):
    """The request names an unknown environment or holds instances it cannot use."""


class PlannerRouteError(Exception):
    """A failure the route answers with ``status_code`` and this message."""

    status_code = 500


class PlannerUnavailable(PlannerRouteError):
    """The server cannot plan at all (no usable sandbox), with what to fix."""

    status_code = 503


class PlannerForbidden(PlannerRouteError):
    """The request names an LLM endpoint the operator did not allow."""

    status_code = 403


class PlannerUpstreamError(PlannerRouteError):
    """The LLM endpoint the request named (and the operator allowed) failed."""

    status_code = 502


def task_environment(request: PlannerSolveRequest) -> Environment:
    task = request.task
    try:
        if task.env.lower() == "grasp":
            return make_environment(
                task.env,
                movement=task.movement,
                carry_limit=task.carry_limit,
                cost_per_step=float(task.cost_per_step),
            )
        return make_environment(task.env)
    except ValueError as error:
        raise PlannerRequestError(str(error)) from error


def request_instances(env: Environment, request: PlannerSolveRequest) -> list[Instance]:
    if (request.instances is None) == (request.generate is None):
        raise PlannerRequestError("give either 'instances' or 'generate', not both or neither")
    if request.generate is not None:
        return env.instances(request.generate.count, seed=request.generate.seed)
    instances = []
    for index, item in enumerate(request.instances or []):
        spec = {"grid": item.grid} if isinstance(item, GridInstance) else {"seed": item.seed}
        try:
            instances.append(env.instance_from_spec(spec, item.id or str(index)))
        except (ValueError, NotImplementedError) as error:
            raise PlannerRequestError(f"instance {index}: {error}") from error
    return instances


def response_from_report(report: SolveReport, *, return_actions: bool) -> PlannerSolveResponse:
    evaluation = report.evaluation
    results = []
    if evaluation is not None:
        results = [
            InstanceResult(
                id=o.instance_id,
                status=o.status.value,
                score=o.score,
                success=o.success,
                actions=o.actions if return_actions else None,
                error=o.error,
            )
            for o in evaluation.outcomes
        ]
    planning = report.planning
    rounds = [
        RoundSummary(
            index=r.index,
            stage=r.stage,
            program_id=r.program_id,
            mean_score=r.mean_score,
            success_rate=r.success_rate,
            error=r.error,
            prompt_tokens=r.prompt_tokens,
            completion_tokens=r.completion_tokens,
        )
        for r in (planning.rounds if planning else [])
    ]
    cost = report.cost
    return PlannerSolveResponse(
        signature=report.signature,
        status=report.status,
        program_id=report.program.program_id if report.program else None,
        program=report.program.source if report.program else None,
        mean_score=evaluation.mean_score if evaluation else None,
        success_rate=evaluation.success_rate if evaluation else None,
        counts=dict(evaluation.counts) if evaluation else {},
        results=results,
        rounds=rounds,
        stopped=planning.stopped if planning else None,
        cost=CostSummary(
            llm_calls=cost.usage.calls,
            prompt_tokens=cost.usage.prompt_tokens,
            completion_tokens=cost.usage.completion_tokens,
            dollars=cost.dollars,
            tokens_per_instance=cost.tokens_per_instance,
            dollars_per_instance=cost.dollars_per_instance,
        ),
        instances_per_s=evaluation.instances_per_s if evaluation else None,
        sandbox_mode=evaluation.sandbox_mode if evaluation else None,
    )


class PlannerService:
    """Plans with the server's own model (or the endpoint a request names)."""

    def __init__(
        self,
        backend: LLMBackend,
        *,
        library: ProgramLibrary,
        model_name: str = "",
        allowed_llm_urls: Sequence[str] = (),
    ) -> None:
        self.backend = backend
        self.library = library
        self.model_name = model_name
        self.allowed_llm_urls = tuple(allowed_llm_urls)
        self._sandbox: Sandbox | None = None

    @property
    def sandbox(self) -> Sandbox:
        """Made on first use, so a server without bubblewrap still serves everything else."""
        if self._sandbox is None:
            try:
                self._sandbox = Sandbox()
            except SandboxError as error:
                raise PlannerUnavailable(
                    f"the planners' sandbox cannot run here: {error}"
                ) from error
        return self._sandbox

    async def solve(self, request: PlannerSolveRequest) -> PlannerSolveResponse:
        env = task_environment(request)
        instances = request_instances(env, request)
        options = SolveOptions(
            planner=PlannerOptions(
                strategy=Strategy(request.strategy),
                mode=request.mode,
                examples=request.examples,
                budget=PlannerBudget(
                    rounds=request.rounds,
                    max_tokens=request.max_tokens,
                    wall_time_s=request.wall_time_s,
                ),
            ),
            train_instances=request.train_instances,
            reuse=request.reuse,
            min_success_rate=request.min_success_rate,
            min_validated_instances=min(request.train_instances, len(instances)),
            prices=Prices(request.prompt_price_per_million, request.completion_price_per_million),
        )
        backend, model_name, external = self.backend, self.model_name, None
        sandbox = self.sandbox
        if request.llm is not None:
            from amortized.llm import OpenAICompatibleBackend

            if not is_allowed(request.llm.base_url, self.allowed_llm_urls):
                raise PlannerForbidden(
                    f"this server does not send requests to {request.llm.base_url}: the "
                    "operator allows LLM endpoints with `amortized serve --allow-llm-url URL` "
                    f"({ALLOWED_LLM_URLS_ENV}); leave out 'llm' to plan with the served model"
                )
            external = OpenAICompatibleBackend(
                request.llm.base_url, request.llm.api_key, request.llm.model
            )
            backend, model_name = external, request.llm.model or request.llm.base_url
        try:
            report = await solve_task(
                env,
                instances,
                backend=backend,
                options=options,
                library=self.library,
                sandbox=sandbox,
                model_name=model_name,
            )
        except BudgetTooSmall as error:
            raise PlannerRequestError(str(error)) from error
        except (openai.APIError, httpx.HTTPError, OSError) as error:
            if external is None:
                raise
            raise PlannerUpstreamError(
                f"the LLM endpoint {request.llm.base_url if request.llm else ''} failed "
                f"({type(error).__name__}: {error}); check that it is up and the key is right"
            ) from error
        finally:
            if external is not None:
                await external.close()
        return response_from_report(report, return_actions=request.return_actions)
