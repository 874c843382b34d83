"""HTTP adapter for KV prediction: the info route and the policy middleware."""

from argparse import Namespace
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.datastructures import State

from amortized.serving.paths import ROUTE_PREFIX
from amortized.serving.routes import state_service
from amortized.serving.routes.errors import documented
from amortized.serving.routes.kv_prediction.middleware import (
    SERVICE_STATE,
    KVPredictionMiddleware,
)
from amortized.serving.routes.kv_prediction.protocol import KVPredictionInfo
from amortized.serving.routes.kv_prediction.serving import KVPredictionService


def make_router() -> APIRouter:
    """``GET /v1/amortized/kv-prediction``: is it on, with which predictor, how to opt out."""
    router = APIRouter()

    @router.get(
        f"{ROUTE_PREFIX}/kv-prediction",
        response_model=KVPredictionInfo,
        **documented(
            "KV-prediction prefill settings",
            "Whether KV prediction is on, with which predictor, and how a request opts in or out.",
            503,
        ),
    )
    async def kv_prediction_info(request: Request) -> KVPredictionInfo:
        return state_service(request, SERVICE_STATE, KVPredictionService).info()

    return router


def install(app: FastAPI) -> None:
    """Put the request-policy middleware in front of vLLM's completion routes."""
    app.add_middleware(KVPredictionMiddleware)


async def init_state(_engine_client: Any, state: State, args: Namespace) -> None:
    """Read the connector settings from vLLM's arguments once."""
    setattr(state, SERVICE_STATE, KVPredictionService.from_args(args))
