"""Async client for ``/v1/amortized/realtime``: stream text in, get the answer out.

async with RealtimeSession("http://127.0.0.1:8000", api_key="...") as session:
    await session.append("What is the capital ")
    await session.append("of France?")
    await session.commit()
    async for delta in session.answer():
        print(delta, end="")
"""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

REALTIME_PATH = "/v1/amortized/realtime"


class RealtimeError(Exception):
    """An ``error`` event from the server (the session is still usable)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class RealtimeAnswer:
    """A finished response: its text and the server's ``response.done`` payload."""

    text: str
    response: dict[str, Any]
    thinking: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return str(self.response.get("status"))

    @property
    def usage(self) -> dict[str, int]:
        return dict(self.response.get("usage") or {})

    @property
    def latency_ms(self) -> float | None:
        """Server-measured end of turn → first answer token."""
        value = (self.response.get("latency") or {}).get("end_of_turn_to_first_token_ms")
        return None if value is None else float(value)


def realtime_url(base_url: str) -> str:
    """``http(s)://host:port[/v1]`` → ``ws(s)://host:port/v1/amortized/realtime``."""
    url = base_url.rstrip("/").removesuffix("/v1")
    if url.startswith("https://"):
        url = "wss://" + url.removeprefix("https://")
    elif url.startswith("http://"):
        url = "ws://" + url.removeprefix("http://")
    return url + REALTIME_PATH


class RealtimeSession:
    """One think-while-listening session over a WebSocket (an async context manager)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        session: dict[str, Any] | None = None,
        open_timeout: float = 10.0,
    ) -> None:
        self.url = realtime_url(base_url)
        self._api_key = api_key
        self._settings = session
        self._open_timeout = open_timeout
        self._connection: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.session: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        """Every server event received, in order (for inspection and tests)."""
        self.committed_at: float | None = None

    async def __aenter__(self) -> "RealtimeSession":
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else None
        self._connection = await connect(
            self.url, additional_headers=headers, open_timeout=self._open_timeout, max_size=None
        )
        self._reader = asyncio.create_task(self._read())
        created = await self._next_of("session.created")
        self.session = created["session"]
        if self._settings:
            await self.update(self._settings)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def update(self, settings: dict[str, Any]) -> dict[str, Any]:
        """``session.update``; returns the session settings now in force."""
        await self.send({"type": "session.update", "session": settings})
        self.session = (await self._next_of("session.updated"))["session"]
        return self.session

    async def append(self, text: str) -> None:
        """Send more of the user's text."""
        await self.send({"type": "input_text_buffer.append", "delta": text})

    async def commit(self) -> None:
        """End the user's turn; the answer starts at once."""
        self.committed_at = time.perf_counter()
        await self.send({"type": "input_text_buffer.commit"})

    async def cancel(self) -> None:
        await self.send({"type": "response.cancel"})

    async def send(self, event: dict[str, Any]) -> None:
        if self._connection is None:
            raise RuntimeError("use `async with RealtimeSession(...)` first")
        await self._connection.send(json.dumps(event))

    async def answer(self) -> AsyncIterator[str]:
        """Answer text as it streams, until ``response.done`` (then see :attr:`last`)."""
        async for event in self._until("response.done"):
            if event["type"] == "response.output_text.delta":
                yield event["delta"]

    async def collect(self) -> RealtimeAnswer:
        """The whole next answer, with its thinking events and ``response.done`` payload."""
        thinking: list[dict[str, Any]] = []
        parts: list[str] = []
        done: dict[str, Any] = {}
        async for event in self._until("response.done"):
            if event["type"] == "response.output_text.delta":
                parts.append(event["delta"])
            elif event["type"].startswith("thinking."):
                thinking.append(event)
            elif event["type"] == "response.done":
                done = event["response"]
        return RealtimeAnswer(text="".join(parts), response=done, thinking=thinking)

    async def ask(
        self, chunks: Iterable[str] | str, *, words_per_second: float | None = None
    ) -> RealtimeAnswer:
        """Send ``chunks`` (a string is split into words) at a speaking rate, commit, answer."""
        if isinstance(chunks, str):
            words = chunks.split(" ")
            chunks = [w if i == 0 else " " + w for i, w in enumerate(words)]
        start = time.perf_counter()
        for index, chunk in enumerate(chunks):
            if words_per_second and index:
                await asyncio.sleep(
                    max(0.0, start + index / words_per_second - time.perf_counter())
                )
            await self.append(chunk)
        await self.commit()
        return await self.collect()

    async def next_event(self, timeout: float | None = None) -> dict[str, Any]:
        """The next server event (``error`` events included, not raised)."""
        event = await asyncio.wait_for(self._queue.get(), timeout)
        if event is None:
            raise ConnectionError("the realtime connection closed")
        return event

    async def _until(self, last: str) -> AsyncIterator[dict[str, Any]]:
        while True:
            event = await self.next_event()
            if event["type"] == "error":
                error = event["error"]
                raise RealtimeError(str(error.get("code")), str(error.get("message")))
            yield event
            if event["type"] == last:
                return

    async def _next_of(self, kind: str) -> dict[str, Any]:
        async for event in self._until(kind):
            if event["type"] == kind:
                return event
        raise ConnectionError(f"the connection closed before {kind}")

    async def _read(self) -> None:
        assert self._connection is not None
        try:
            async for message in self._connection:
                event = json.loads(message)
                self.events.append(event)
                self._queue.put_nowait(event)
        except ConnectionClosed:
            pass
        finally:
            self._queue.put_nowait(None)
