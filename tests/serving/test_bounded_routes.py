"""Nothing a client sends can hurt the server: bounded simulate pacing, outbound requests only
to allowed endpoints, every WebSocket frame type answered, and a prompt shutdown on SIGTERM
after abandoned requests of every route. The server keeps serving after each case."""

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from amortized.agents.realtime import realtime_url
from amortized.models import ModelFolder
from amortized.serving.process import ServerProcess
from tests.conftest import (
    ALLOWED_UNREACHABLE_LLM,
    API_KEY,
    UNREACHABLE_LLM_URL,
    amortized_server,
)

pytestmark = pytest.mark.server
HEADERS = {"Authorization": f"Bearer {API_KEY}"}
QUIET = {"thinking": {"budget_tokens": 0}, "answer": {"max_tokens": 2}}


def post(server: ServerProcess, route: str, body: Any, timeout: float = 60) -> httpx.Response:
    url = f"{server.base_url}/amortized/{route}"
    return httpx.post(url, json=body, headers=HEADERS, timeout=timeout)


def still_serving(server: ServerProcess) -> None:
    reply = httpx.post(
        f"{server.base_url}/completions",
        json={"model": "tiny", "prompt": "hi", "max_tokens": 2},
        headers=HEADERS,
        timeout=60,
    )
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"text": "word " * 1000, "words_per_second": 3}, "at most 300 s"),
        ({"text": "0", "words_per_second": 1e-300}, "greater than or equal to 0.1"),
        ({"text": "0", "words_per_second": 1e300}, "less than or equal to 1000"),
        ({"text": "0", "words_per_chunk": 10**9}, "less than or equal to 10000"),
        ({"text": "x" * 100_001}, "at most 100000 characters"),
        ({"text": "hi", "session": {"answer": {"max_tokens": -1}}}, "max_tokens"),
    ],
)
def test_simulate_refuses_unbounded_requests(
    live_server: ServerProcess, body: dict[str, Any], fragment: str
) -> None:
    reply = post(live_server, "realtime/simulate", body)
    assert reply.status_code == 400, reply.text
    assert fragment in reply.json()["error"]["message"]
    still_serving(live_server)


@pytest.mark.parametrize(
    ("text", "words_per_chunk", "words_per_second", "low_ms", "high_ms"),
    [
        ("0", 9999, 3, 300, 2000),  # one word: a third of a second, not 55 minutes
        ("two words", 30, 2, 950, 3000),  # two words at 2/s: one second, not fifteen
    ],
)
def test_simulate_paces_by_the_words_a_chunk_holds(
    live_server: ServerProcess,
    text: str,
    words_per_chunk: int,
    words_per_second: float,
    low_ms: float,
    high_ms: float,
) -> None:
    body = {
        "text": text,
        "words_per_chunk": words_per_chunk,
        "words_per_second": words_per_second,
        "session": QUIET,
    }
    reply = post(live_server, "realtime/simulate", body)
    assert reply.status_code == 200, reply.text
    assert low_ms <= reply.json()["listening_ms"] <= high_ms


def test_llm_endpoints_must_be_allowed_and_failures_are_502(live_server: ServerProcess) -> None:
    body: dict[str, Any] = {
        "task": {"env": "GRASP"},
        "generate": {"count": 1},
        "reuse": False,
        "llm": {"base_url": "http://169.254.169.254/latest/v1"},
    }
    forbidden = post(live_server, "planners/solve", body)
    assert forbidden.status_code == 403, forbidden.text
    assert "--allow-llm-url" in forbidden.json()["error"]["message"]
    body["llm"] = {"base_url": UNREACHABLE_LLM_URL, "model": "x"}
    unreachable = post(live_server, "planners/solve", body, timeout=120)
    assert unreachable.status_code == 502, unreachable.text
    message = unreachable.json()["error"]["message"]
    assert UNREACHABLE_LLM_URL in message
    assert "failed" in message
    still_serving(live_server)


@pytest.mark.parametrize("price", ["prompt_price_per_million", "completion_price_per_million"])
def test_a_price_that_would_make_the_cost_infinite_is_refused(
    live_server: ServerProcess, price: str
) -> None:
    # Schemathesis found 1.6e308 answered with a 200 whose "dollars" was null (infinity).
    body = {"task": {"env": "GRASP"}, "generate": {"count": 1}, "rounds": 1, price: 1.6e308}
    reply = post(live_server, "planners/solve", body)
    assert reply.status_code == 400, reply.text
    assert price in reply.json()["error"]["message"]


def test_a_token_budget_below_the_prompt_is_refused_with_the_minimum(
    live_server: ServerProcess,
) -> None:
    body = {"task": {"env": "GRASP"}, "generate": {"count": 1}, "reuse": False, "max_tokens": 50}
    reply = post(live_server, "planners/solve", body)
    assert reply.status_code == 400, reply.text
    message = reply.json()["error"]["message"]
    assert "give max_tokens of at least" in message
    minimum = int(message.rsplit(" ", 1)[-1])
    assert minimum > 50
    still_serving(live_server)


async def test_every_websocket_frame_type_gets_an_answer(live_server: ServerProcess) -> None:
    url = realtime_url(live_server.root_url)
    async with connect(url, additional_headers=HEADERS) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(b"\xff\xfe not text")  # binary, not UTF-8
        error = json.loads(await ws.recv())
        assert (error["type"], error["error"]["code"]) == ("error", "invalid_json")
        await ws.send(json.dumps({"type": "session.update", "session": QUIET}).encode())
        assert json.loads(await ws.recv())["type"] == "session.updated"  # JSON as bytes works
        await ws.ping()
        await ws.send("not json")
        error = json.loads(await ws.recv())
        assert error["error"]["code"] == "invalid_json"
    still_serving(live_server)


def _abandon(url: str, body: Any, seconds: float) -> None:
    """POST and give up after ``seconds``, as a client that goes away would."""
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(url, json=body, headers=HEADERS, timeout=seconds)


async def _abandon_websocket(url: str) -> None:
    ws = await connect(url, additional_headers=HEADERS)
    await ws.recv()
    await ws.send(json.dumps({"type": "input_text_buffer.append", "delta": "hello there"}))
    await asyncio.sleep(0.5)
    ws.transport.abort()  # gone without a close frame


def test_sigterm_stops_the_server_within_5_s_after_abandoned_requests(
    tiny_llama: ModelFolder, tmp_path: Any
) -> None:
    log = tmp_path / "shutdown.log"
    args = ("--served-model-name", "tiny", "--max-model-len", "2048")
    with amortized_server(tiny_llama.path, log, *args, env=ALLOWED_UNREACHABLE_LLM) as server:
        # A two-token prompt as the server's very first request used to kill the model runner
        # with SIGILL on CPUs with AMX (amortized.serving.engine_setup).
        still_serving(server)
        still_serving(server)
        routes = f"{server.base_url}/amortized"
        abandoned = [
            (f"{routes}/realtime/simulate", {"text": "word " * 500, "words_per_second": 2}),
            (
                f"{routes}/planners/solve",
                {"task": {"env": "GRASP"}, "generate": {"count": 200}, "reuse": False},
            ),
            (
                f"{routes}/tabular/predict",
                {
                    "train": [{"x": i, "y": str(i % 3)} for i in range(200)],
                    "test": [{"x": i} for i in range(200)],
                    "target": "y",
                },
            ),
            (
                f"{server.base_url}/completions",
                {"model": "tiny", "prompt": "hi", "max_tokens": 1500, "stream": True},
            ),
        ]
        threads = [
            threading.Thread(target=_abandon, args=(url, body, 1.5)) for url, body in abandoned
        ]
        for thread in threads:
            thread.start()
        asyncio.run(_abandon_websocket(realtime_url(server.root_url)))
        for thread in threads:
            thread.join()
        pid = server.pid
        assert pid is not None
        started = time.monotonic()
        os.kill(pid, signal.SIGTERM)  # the server process only, as `docker stop` does
        code = server.wait_exit(timeout=30)
        took = time.monotonic() - started
    assert code is not None, "the server was still running 30 s after SIGTERM"
    assert took <= 5.0, f"SIGTERM took {took:.1f} s"
