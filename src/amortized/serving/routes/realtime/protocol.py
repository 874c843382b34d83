"""The realtime event protocol, modeled on the OpenAI Realtime API (text only).

Client events are validated here; server events are built from session events by
:func:`server_event`. ``input_text_buffer.append`` is our addition: streamed user text.
"""

import uuid
from dataclasses import asdict
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from amortized.serving.listening.config import SessionConfig
from amortized.serving.listening.events import (
    AnswerDelta,
    ChunkAppended,
    ErrorEvent,
    ResponseCreated,
    ResponseDone,
    SessionEvent,
    ThinkingDelta,
    ThinkingDone,
    TurnCommitted,
)


class _ClientEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str | None = None


class SessionUpdate(_ClientEvent):
    """Change settings; fields not given keep their value."""

    type: Literal["session.update"]
    session: dict[str, Any]


class InputTextAppend(_ClientEvent):
    """More of the user's text, as it arrives (typed, or from a speech recognizer)."""

    type: Literal["input_text_buffer.append"]
    delta: str = Field(min_length=1)


class InputTextCommit(_ClientEvent):
    """The user's turn is over: thinking stops and the answer starts."""

    type: Literal["input_text_buffer.commit"]


class InputTextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["input_text"]
    text: str = Field(min_length=1)


class UserMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["message"] = "message"
    role: Literal["user"]
    content: list[InputTextPart] = Field(min_length=1)


class ConversationItemCreate(_ClientEvent):
    """A whole user message at once (no thinking between its parts)."""

    type: Literal["conversation.item.create"]
    item: UserMessage


class ResponseCreate(_ClientEvent):
    """Answer now; same as a commit (kept for clients written for the OpenAI API)."""

    type: Literal["response.create"]
    response: dict[str, Any] | None = None


class ResponseCancel(_ClientEvent):
    type: Literal["response.cancel"]


ClientEvent = Annotated[
    SessionUpdate
    | InputTextAppend
    | InputTextCommit
    | ConversationItemCreate
    | ResponseCreate
    | ResponseCancel,
    Field(discriminator="type"),
]

CLIENT_EVENT_TYPES = (
    "session.update",
    "input_text_buffer.append",
    "input_text_buffer.commit",
    "conversation.item.create",
    "response.create",
    "response.cancel",
)
UNSUPPORTED_PREFIXES = ("input_audio_buffer.", "output_audio_buffer.", "transcription_session.")


def _settings_model(model: type[BaseModel], name: str) -> type[BaseModel]:
    """``model`` with every field optional (a change to it), nested models likewise; the
    merged result is validated as ``model`` itself. A field left out keeps its value; the
    others carry ``model``'s type, null-ness and limits, so OpenAPI offers nothing the merged
    config then refuses."""
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        annotation: Any = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            annotation = _settings_model(
                annotation, annotation.__name__.replace("Config", "") + "Settings"
            )
        if info.metadata:
            annotation = Annotated[(annotation, *info.metadata)]
        fields[field_name] = (annotation, Field(default=None, description=info.description))
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


SessionSettings: type[BaseModel] = _settings_model(SessionConfig, "SessionSettings")
"""What ``session.update`` and the simulate route accept: any part of the session config."""

MAX_SIMULATED_SECONDS = 300.0
"""The longest speech the simulate route replays; longer requests are refused with a 400."""


class SimulateRequest(BaseModel):
    """Replay one message as timed chunks through a session, for evaluation over plain HTTP."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(
        min_length=1, max_length=100_000, description="The whole user message (words by spaces)."
    )
    words_per_second: float = Field(
        default=3.0, ge=0.1, le=1000, description="Simulated speaking rate."
    )
    words_per_chunk: int = Field(default=1, ge=1, le=10000, description="Words sent per append.")
    session: SessionSettings = Field(  # type: ignore[valid-type]
        default_factory=lambda: SessionSettings(),
        description="Session settings, as in session.update.",
    )

    @model_validator(mode="after")
    def _speech_fits(self) -> "SimulateRequest":
        seconds = len(self.text.split(" ")) / self.words_per_second
        if seconds > MAX_SIMULATED_SECONDS:
            raise ValueError(
                f"the simulated speech would take {seconds:.0f} s; at most "
                f"{MAX_SIMULATED_SECONDS:.0f} s: raise words_per_second or send less text"
            )
        return self


class ThinkingSegment(BaseModel):
    chunk_index: int
    tokens: int
    reason: str
    text: str | None = None


class SimulateResponse(BaseModel):
    object: Literal["realtime.simulation"] = "realtime.simulation"
    answer: str
    status: str
    chunks: int
    thinking: list[ThinkingSegment]
    usage: dict[str, int]
    latency: dict[str, float | None]
    listening_ms: float


def event_id() -> str:
    return f"evt_{uuid.uuid4().hex[:20]}"


def session_payload(session_id: str, config: SessionConfig) -> dict[str, Any]:
    return {"id": session_id, "object": "realtime.session", **config.model_dump(mode="json")}


def error_event(code: str, message: str, client_event_id: str | None = None) -> dict[str, Any]:
    return {
        "type": "error",
        "event_id": event_id(),
        "error": {
            "type": "invalid_request_error" if code != "engine_error" else "server_error",
            "code": code,
            "message": message,
            "event_id": client_event_id,
        },
    }


def server_event(event: SessionEvent) -> list[dict[str, Any]]:
    """The protocol event(s) for one session event."""
    base: dict[str, Any] = {"event_id": event_id()}
    if isinstance(event, ChunkAppended):
        return [{"type": "input_text_buffer.appended", **base, **asdict(event)}]
    if isinstance(event, TurnCommitted):
        return [{"type": "input_text_buffer.committed", **base, **asdict(event)}]
    if isinstance(event, ThinkingDelta):
        return [{"type": "thinking.delta", **base, **asdict(event)}]
    if isinstance(event, ThinkingDone):
        return [{"type": "thinking.done", **base, **asdict(event)}]
    if isinstance(event, ResponseCreated):
        created = {"id": event.response_id, "object": "realtime.response", "status": "in_progress"}
        return [{"type": "response.created", **base, "response": created}]
    if isinstance(event, AnswerDelta):
        return [{"type": "response.output_text.delta", **base, **asdict(event)}]
    if isinstance(event, ResponseDone):
        done: dict[str, Any] = {"type": "response.output_text.done", "event_id": event_id()}
        response: dict[str, Any] = {
            "id": event.response_id,
            "object": "realtime.response",
            "status": event.status,
            "finish_reason": event.finish_reason,
            "output_text": event.text,
            "usage": asdict(event.usage),
            "latency": asdict(event.latency),
        }
        return [
            {**done, "response_id": event.response_id, "text": event.text},
            {"type": "response.done", **base, "response": response},
        ]
    if isinstance(event, ErrorEvent):
        return [error_event(event.code.value, event.message, event.event_type)]
    raise TypeError(f"unknown session event {event!r}")
