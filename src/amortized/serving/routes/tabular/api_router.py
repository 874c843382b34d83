"""HTTP adapter for many-shot tabular prediction."""

from argparse import Namespace
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from starlette.datastructures import State

from amortized.serving.paths import ROUTE_PREFIX
from amortized.serving.routes import state_service, unless_disconnected
from amortized.serving.routes.errors import documented
from amortized.serving.routes.tabular.protocol import TabularPredictRequest, TabularPredictResponse
from amortized.serving.routes.tabular.serving import TabularService
from amortized.tabular.predictor import TabularInputError

SERVICE_STATE = "amortized_tabular"


def make_router() -> APIRouter:
    router = APIRouter()

    @router.post(
        f"{ROUTE_PREFIX}/tabular/predict",
        response_model=TabularPredictResponse,
        **documented(
            "Label table rows from many labelled examples (in-context learning)",
            "Serializes the training rows as demonstrations, batches the test rows "
            "into prompts and returns one label per test row with class probabilities.",
            400,
            503,
        ),
    )
    async def predict(body: TabularPredictRequest, request: Request) -> TabularPredictResponse:
        service = state_service(request, SERVICE_STATE, TabularService)
        try:
            return await unless_disconnected(request, service.predict(body))
        except TabularInputError as error:
            raise HTTPException(status_code=400, detail=str(error)) from error

    return router


async def init_state(engine_client: Any, state: State, _args: Namespace) -> None:
    if engine_client is None:
        return
    from amortized.llm.vllm_local import EngineClientBackend

    setattr(state, SERVICE_STATE, TabularService(EngineClientBackend(engine_client)))
