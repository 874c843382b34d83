"""``unless_disconnected``: long route work stops when the client leaves or when vLLM's engine
has stopped, and a cancelled task that will not unwind cannot hold the server up."""

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import HTTPException
from starlette.requests import Request

from amortized.serving.routes import CANCEL_GRACE_S, unless_disconnected


def request(engine: Any, *, disconnected: bool = False) -> Request:
    app = SimpleNamespace(state=SimpleNamespace(engine_client=engine))

    async def receive() -> dict[str, Any]:
        if disconnected:
            return {"type": "http.disconnect"}
        await asyncio.sleep(3600)
        return {}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "app": app}
    return Request(scope, receive)


async def stubborn(cancelled: list[bool]) -> str:
    """Work that, like an abort sent to a dead engine, never returns once cancelled."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        cancelled.append(True)
        await asyncio.Event().wait()
    return "never"


async def test_a_stopped_engine_ends_the_route_within_the_grace() -> None:
    cancelled: list[bool] = []
    started = time.monotonic()
    route = unless_disconnected(request(SimpleNamespace(errored=True)), stubborn(cancelled))
    with pytest.raises(HTTPException) as caught:
        await asyncio.wait_for(route, 10)  # a hang fails here instead
    assert caught.value.status_code == 503
    assert cancelled == [True]
    assert CANCEL_GRACE_S <= 1.0
    assert time.monotonic() - started < 3


async def test_a_client_that_left_ends_the_route() -> None:
    cancelled: list[bool] = []
    engine = SimpleNamespace(errored=False)
    route = unless_disconnected(request(engine, disconnected=True), stubborn(cancelled))
    started = time.monotonic()
    with pytest.raises(HTTPException) as caught:
        await asyncio.wait_for(route, 10)
    assert time.monotonic() - started < 3
    assert caught.value.status_code == 499
    assert cancelled == [True]


async def test_finished_work_is_returned() -> None:
    async def quick() -> str:
        await asyncio.sleep(0.01)
        return "done"

    engine = SimpleNamespace(errored=False)
    assert await unless_disconnected(request(engine), quick()) == "done"
