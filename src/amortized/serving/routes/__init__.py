"""Thin HTTP adapters, one folder per endpoint group (protocol, serving logic, router)."""

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import HTTPException, Request

Service = TypeVar("Service")
Result = TypeVar("Result")

CLIENT_CLOSED_REQUEST = 499
"""nginx's status for a request whose client left: nobody reads it, but logs say why."""


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
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
