"""HTTP adapter for the info route."""

from fastapi import APIRouter, HTTPException, Request

from amortized.serving.capabilities import ROUTE_PREFIX
from amortized.serving.routes.info.protocol import InfoResponse
from amortized.serving.routes.info.serving import InfoService

INFO_SERVICE_STATE = "amortized_info"


def make_router() -> APIRouter:
    """Router serving ``GET /v1/amortized/info`` from the service stored in app state."""
    router = APIRouter()

    @router.get(f"{ROUTE_PREFIX}/info", response_model=InfoResponse, tags=["amortized"])
    async def amortized_info(request: Request) -> InfoResponse:
        service: InfoService | None = getattr(request.app.state, INFO_SERVICE_STATE, None)
        if service is None:
            raise HTTPException(status_code=503, detail="amortized is still starting up")
        return service.info()

    return router
