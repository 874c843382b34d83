"""HTTP adapter for think-while-listening: the WebSocket and the simulate route."""

import contextlib
from argparse import Namespace
from typing import Any

from fastapi import APIRouter, HTTPException, Request, WebSocket, WebSocketDisconnect
from starlette.datastructures import State

from amortized.serving.listening import SessionError, VLLMBackend
from amortized.serving.paths import ROUTE_PREFIX
from amortized.serving.routes import state_service, unless_disconnected
from amortized.serving.routes.errors import documented
from amortized.serving.routes.realtime.protocol import SimulateRequest, SimulateResponse
from amortized.serving.routes.realtime.serving import RealtimeService

SERVICE_STATE = "amortized_realtime"
REALTIME_PATH = f"{ROUTE_PREFIX}/realtime"


def make_router() -> APIRouter:
    """``WS /v1/amortized/realtime`` and ``POST /v1/amortized/realtime/simulate``."""
    router = APIRouter()

    @router.websocket(REALTIME_PATH)
    async def realtime(websocket: WebSocket) -> None:
        service = getattr(websocket.app.state, SERVICE_STATE, None)
        await websocket.accept()
        if not isinstance(service, RealtimeService):
            await websocket.close(code=1013, reason="amortized is still starting up")
            return

        async def receive_text() -> str:
            """A text frame's text; a binary frame's bytes as UTF-8 (clients that send JSON
            as bytes work, anything else becomes an ``invalid_json`` error event)."""
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            if message.get("text") is not None:
                return str(message["text"])
            return bytes(message.get("bytes") or b"").decode("utf-8", errors="replace")

        with contextlib.suppress(WebSocketDisconnect):
            await service.run_connection(receive_text, websocket.send_json)

    @router.post(
        f"{REALTIME_PATH}/simulate",
        response_model=SimulateResponse,
        **documented(
            "Replay a message as speech and answer it (think while listening)",
            "Streams `text` into a session at `words_per_second`, thinking after "
            "each chunk, then commits and returns the answer, the thinking per chunk, usage and "
            "latency. For evaluation without a WebSocket client; the WebSocket is "
            f"`{REALTIME_PATH}`.",
            400,
            503,
        ),
    )
    async def simulate(body: SimulateRequest, request: Request) -> SimulateResponse:
        service = state_service(request, SERVICE_STATE, RealtimeService)
        try:
            return await unless_disconnected(request, service.simulate(body))
        except SessionError as error:
            raise HTTPException(
                status_code=400, detail=f"{error.code.value}: {error.message}"
            ) from error
        except ValueError as error:  # pydantic ValidationError of the session settings
            raise HTTPException(status_code=400, detail=str(error)) from error

    return router


async def init_state(engine_client: Any, state: State, _args: Namespace) -> None:
    """Sessions run on the server's own engine and tokenizer."""
    if engine_client is None:
        return
    tokenizer = engine_client.renderer.get_tokenizer()
    setattr(state, SERVICE_STATE, RealtimeService(VLLMBackend(engine_client), tokenizer))
