"""HTTP adapter for code-policy grid planning."""

from argparse import Namespace
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from starlette.datastructures import State

from amortized.serving.capabilities import ROUTE_PREFIX
from amortized.serving.routes import state_service
from amortized.serving.routes.planners.protocol import PlannerSolveRequest, PlannerSolveResponse
from amortized.serving.routes.planners.serving import (
    PlannerRequestError,
    PlannerService,
    PlannerUnavailable,
)

SERVICE_STATE = "amortized_planners"


def make_router() -> APIRouter:
    router = APIRouter()

    @router.post(
        f"{ROUTE_PREFIX}/planners/solve", response_model=PlannerSolveResponse, tags=["amortized"]
    )
    async def solve(body: PlannerSolveRequest, request: Request) -> PlannerSolveResponse:
        service = state_service(request, SERVICE_STATE, PlannerService)
        try:
            return await service.solve(body)
        except PlannerRequestError as error:
            raise HTTPException(status_code=400, detail=str(error)) from error
        except PlannerUnavailable as error:
            raise HTTPException(status_code=503, detail=str(error)) from error

    return router


async def init_state(engine_client: Any, state: State, args: Namespace) -> None:
    if engine_client is None:
        return
    from amortized.llm.vllm_local import EngineClientBackend
    from amortized.planners.library import ProgramLibrary

    names = getattr(args, "served_model_name", None) or [getattr(args, "model", "")]
    service = PlannerService(
        EngineClientBackend(engine_client), library=ProgramLibrary(), model_name=str(names[0])
    )
    setattr(state, SERVICE_STATE, service)
