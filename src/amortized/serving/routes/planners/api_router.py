"""HTTP adapter for code-policy grid planning."""

from argparse import Namespace
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from starlette.datastructures import State

from amortized.serving.outbound import allowed_llm_urls
from amortized.serving.paths import ROUTE_PREFIX
from amortized.serving.routes import state_service, unless_disconnected
from amortized.serving.routes.errors import documented
from amortized.serving.routes.planners.protocol import PlannerSolveRequest, PlannerSolveResponse
from amortized.serving.routes.planners.serving import (
    PlannerRequestError,
    PlannerRouteError,
    PlannerService,
)

SERVICE_STATE = "amortized_planners"


def make_router() -> APIRouter:
    router = APIRouter()

    @router.post(
        f"{ROUTE_PREFIX}/planners/solve",
        response_model=PlannerSolveResponse,
        **documented(
            "Solve grid-world instances with one LLM-written policy program",
            "Plans a policy program for the task (or reuses a validated one from the "
            "library), runs it in the sandbox over every instance and returns actions, scores and "
            "the LLM cost.",
            400,
            403,
            502,
            503,
        ),
    )
    async def solve(body: PlannerSolveRequest, request: Request) -> PlannerSolveResponse:
        service = state_service(request, SERVICE_STATE, PlannerService)
        try:
            return await unless_disconnected(request, service.solve(body))
        except PlannerRequestError as error:
            raise HTTPException(status_code=400, detail=str(error)) from error
        except PlannerRouteError as error:
            raise HTTPException(status_code=error.status_code, detail=str(error)) from error

    return router


async def init_state(engine_client: Any, state: State, args: Namespace) -> None:
    if engine_client is None:
        return
    from amortized.llm.vllm_local import EngineClientBackend
    from amortized.planners.library import ProgramLibrary

    names = getattr(args, "served_model_name", None) or [getattr(args, "model", "")]
    service = PlannerService(
        EngineClientBackend(engine_client),
        library=ProgramLibrary(),
        model_name=str(names[0]),
        allowed_llm_urls=allowed_llm_urls(),
    )
    setattr(state, SERVICE_STATE, service)
