"""Thin HTTP adapters, one folder per endpoint group (protocol, serving logic, router)."""

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import HTTPException, Request

Service = TypeVar("Service")
Result = TypeVar("Result")

CLIENT_CLOSED_REQUEST = 499
"""nginx's status for a request whose client left: nobody reads it, but logs say why."""


CANCEL_GRACE_S = 1.0
"""How long a cancelled task may take to unwind before it is left behind."""


async def settle(task: "asyncio.Future[Any]", grace: float = CANCEL_GRACE_S) -> None:
    """Wait up to ``grace`` seconds for a cancelled task (its own errors are not raised; a
    cancellation of the caller still is)."""
    await asyncio.wait({task}, timeout=grace)
    if task.done() and not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved


def engine_stopped(request: Request) -> bool:
    """Whether vLLM's engine client (``app.state.engine_client``) has stopped or died."""
    engine = getattr(request.app.state, "engine_client", None)
    return bool(getattr(engine, "errored", False)) if engine is not None else False


def state_service(request: Request, attribute: str, kind: type[Service]) -> Service:
    """The service a capability's ``init_state`` stored; 503 until start-up has done so."""
    service = getattr(request.app.state, attribute, None)
    if not isinstance(service, kind):
        raise HTTPException(status_code=503, detail="amortized is still starting up")
    return service


async def unless_disconnected(request: Request, work: Awaitable[Result]) -> Result:
    """``work``'s result, or cancel it as soon as the client goes away: long routes must not
    go on working (or sleeping) for nobody, nor hold up the server's shutdown."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise HTTPException(CLIENT_CLOSED_REQUEST, detail="the client closed the request")
            if engine_stopped(request):
                # vLLM stops its engine before the HTTP server, which then waits, without a
                # limit, for every request in flight: work still waiting on the engine would
                # hold the shutdown forever.
                raise HTTPException(503, detail="the server is shutting down")
    finally:
        if not task.done():
            task.cancel()
            # Bounded: while the server shuts down, the engine a cancelled generation aborts
            # may already be gone, and its abort would then never return.
            await settle(task)
