"""Realtime serving logic: one :class:`ListeningSession` per WebSocket, and the simulator.

Everything here speaks protocol dicts and session objects; the FastAPI specifics stay in
``api_router``. Client mistakes become ``error`` events and the connection carries on.
"""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from pydantic import BaseModel, TypeAdapter, ValidationError

from amortized.serving.listening import (
    ErrorCode,
    GenerationBackend,
    ListeningSession,
    SessionConfig,
    SessionError,
    TemplateTokenizer,
)
from amortized.serving.listening.events import ResponseDone, ThinkingDelta, ThinkingDone
from amortized.serving.routes.realtime.protocol import (
    CLIENT_EVENT_TYPES,
    UNSUPPORTED_PREFIXES,
    ClientEvent,
    ConversationItemCreate,
    InputTextAppend,
    InputTextCommit,
    ResponseCancel,
    ResponseCreate,
    SessionUpdate,
    SimulateRequest,
    SimulateResponse,
    ThinkingSegment,
    error_event,
    event_id,
    server_event,
    session_payload,
)

SendJson = Callable[[dict[str, Any]], Awaitable[None]]
_CLIENT_EVENTS: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)


def merged_config(current: SessionConfig, changes: dict[str, Any]) -> SessionConfig:
    """``current`` with ``changes`` applied one level deep (as ``session.update`` promises)."""
    data = current.model_dump()
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return SessionConfig.model_validate(data)


class RealtimeService:
    """Creates sessions on the server's engine with the server's default settings."""

    def __init__(
        self,
        backend: GenerationBackend,
        tokenizer: TemplateTokenizer,
        defaults: SessionConfig | None = None,
    ) -> None:
        self.backend = backend
        self.tokenizer = tokenizer
        self.defaults = defaults or SessionConfig()

    def new_session(self, config: SessionConfig | None = None) -> ListeningSession:
        return ListeningSession(self.backend, self.tokenizer, config or self.defaults)

    async def run_connection(
        self, receive_text: Callable[[], Awaitable[str]], send_json: SendJson
    ) -> None:
        """Serve one connection until the client leaves; always closes the session."""
        session = self.new_session()
        lock = asyncio.Lock()

        async def send(payload: dict[str, Any]) -> None:
            async with lock:
                await send_json(payload)

        async def forward_events() -> None:
            async for event in session.events():
                for payload in server_event(event):
                    await send(payload)

        writer = asyncio.create_task(forward_events())
        try:
            await send(
                {
                    "type": "session.created",
                    "event_id": event_id(),
                    "session": session_payload(session.id, session.config),
                }
            )
            while True:
                raw = await receive_text()
                reply = await self.handle_client_event(session, raw)
                if reply is not None:
                    await send(reply)
        finally:
            await session.close()
            try:
                await asyncio.wait_for(writer, timeout=5)
            except (TimeoutError, Exception):
                writer.cancel()

    async def handle_client_event(
        self, session: ListeningSession, raw: str
    ) -> dict[str, Any] | None:
        """Apply one client event; returns an event to send back at once (or None)."""
        try:
            payload = json.loads(raw)
        except json.JSONDecodeError as error:
            return error_event(ErrorCode.INVALID_JSON.value, f"not JSON: {error}")
        if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
            return error_event(
                ErrorCode.INVALID_EVENT.value, 'an event is a JSON object with a string "type"'
            )
        kind = payload["type"]
        client_id = payload.get("event_id") if isinstance(payload.get("event_id"), str) else None
        if kind.startswith(UNSUPPORTED_PREFIXES):
            return error_event(
                ErrorCode.UNSUPPORTED_EVENT.value,
                f"{kind} is not supported: this endpoint takes text; send "
                "input_text_buffer.append with the transcript instead",
                client_id,
            )
        if kind not in CLIENT_EVENT_TYPES:
            return error_event(
                ErrorCode.UNKNOWN_EVENT.value,
                f"unknown event type {kind!r}; expected one of {', '.join(CLIENT_EVENT_TYPES)}",
                client_id,
            )
        try:
            event = _CLIENT_EVENTS.validate_python(payload)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'][1:]) or kind}: {e['msg']}"
                for e in error.errors()
            )
            return error_event(ErrorCode.INVALID_EVENT.value, f"{kind}: {problems}", client_id)
        try:
            return await self._apply(session, event)
        except SessionError as error:
            return error_event(error.code.value, error.message, client_id)
        except ValidationError as error:
            return error_event(
                ErrorCode.INVALID_EVENT.value,
                f"session.update: {error.errors()[0]['msg']}",
                client_id,
            )

    async def _apply(self, session: ListeningSession, event: ClientEvent) -> dict[str, Any] | None:
        if isinstance(event, SessionUpdate):
            session.update(merged_config(session.config, event.session))
            return {
                "type": "session.updated",
                "event_id": event_id(),
                "session": session_payload(session.id, session.config),
            }
        if isinstance(event, InputTextAppend):
            await session.append(event.delta)
        elif isinstance(event, ConversationItemCreate):
            await session.append("".join(part.text for part in event.item.content))
        elif isinstance(event, InputTextCommit | ResponseCreate):
            await session.commit()
        elif isinstance(event, ResponseCancel):
            await session.cancel()
        return None

    @staticmethod
    def _until(started: float, words: int, words_per_second: float) -> float:
        """Seconds to wait until ``words`` words have been said since ``started``."""
        return max(0.0, started + words / words_per_second - time.perf_counter())

    async def simulate(self, request: SimulateRequest) -> SimulateResponse:
        """Speak ``request.text`` into a session at the given rate, commit, collect the answer."""
        changes = cast(BaseModel, request.session).model_dump(exclude_unset=True)
        config = merged_config(self.defaults, changes)
        session = self.new_session(config)
        words = request.text.split(" ")
        step = request.words_per_chunk
        pieces = [words[i : i + step] for i in range(0, len(words), step)]
        started = time.perf_counter()
        heard = 0  # words so far: each chunk takes as long as the words it holds take to say
        try:
            for index, piece in enumerate(pieces):
                if index:
                    await asyncio.sleep(self._until(started, heard, request.words_per_second))
                await session.append(" ".join(piece) if index == 0 else " " + " ".join(piece))
                heard += len(piece)
            await asyncio.sleep(self._until(started, heard, request.words_per_second))
            listening_ms = (time.perf_counter() - started) * 1000
            await session.commit()
            await session.wait_answer()
        finally:
            await session.close()
        segments: dict[int, ThinkingSegment] = {}
        done: ResponseDone | None = None
        async for event in session.events():
            if isinstance(event, ThinkingDone):
                text = segments.get(event.chunk_index)
                segments[event.chunk_index] = ThinkingSegment(
                    chunk_index=event.chunk_index,
                    tokens=event.tokens,
                    reason=event.reason,
                    text=(text.text if text else "") if config.thinking.emit else None,
                )
            elif isinstance(event, ThinkingDelta):
                seg = segments.setdefault(
                    event.chunk_index,
                    ThinkingSegment(chunk_index=event.chunk_index, tokens=0, reason="", text=""),
                )
                seg.text = (seg.text or "") + event.delta
            elif isinstance(event, ResponseDone):
                done = event
        if done is None:
            raise SessionError(ErrorCode.ENGINE_ERROR, "the answer did not finish")
        return SimulateResponse(
            answer=done.text,
            status=done.status,
            chunks=len(pieces),
            thinking=sorted(segments.values(), key=lambda s: s.chunk_index),
            usage={k: int(v) for k, v in vars(done.usage).items()},
            latency=dict(vars(done.latency)),
            listening_ms=listening_ms,
        )
