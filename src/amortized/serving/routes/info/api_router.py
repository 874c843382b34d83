"""HTTP adapter for the info route."""

from fastapi import APIRouter, Request

from amortized.serving.paths import ROUTE_PREFIX
from amortized.serving.routes import state_service
from amortized.serving.routes.errors import documented
from amortized.serving.routes.info.protocol import InfoResponse
from amortized.serving.routes.info.serving import InfoService

INFO_SERVICE_STATE = "amortized_info"


def make_router() -> APIRouter:
    """Router serving ``GET /v1/amortized/info`` from the service stored in app state."""
    router = APIRouter()

    @router.get(
        f"{ROUTE_PREFIX}/info",
        response_model=InfoResponse,
        **documented(
            "What this server serves",
            "The served models (with CASAL provenance), amortized's version and the "
            "enabled capabilities with their routes.",
            503,
        ),
    )
    async def amortized_info(request: Request) -> InfoResponse:
        return state_service(request, INFO_SERVICE_STATE, InfoService).info()

    return router
