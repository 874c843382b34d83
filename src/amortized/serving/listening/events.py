"""What a session reports: plain dataclasses that the route turns into protocol events."""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal


class ErrorCode(StrEnum):
    """Stable machine-readable codes for ``error`` events."""

    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"
    UNKNOWN_EVENT = "unknown_event"
    UNSUPPORTED_EVENT = "unsupported_event"
    INPUT_BUFFER_EMPTY = "input_buffer_empty"
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    RESPONSE_IN_PROGRESS = "response_in_progress"
    NO_RESPONSE = "no_response_in_progress"
    SESSION_ALREADY_STARTED = "session_already_started"
    ENGINE_ERROR = "engine_error"


class SessionError(Exception):
    """A client mistake the session reports as an ``error`` event and survives."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Usage:
    """Tokens of one turn: heard input, thinking and answer; prefix-cache hits across requests."""

    input_tokens: int
    thinking_tokens: int
    output_tokens: int
    cached_tokens: int
    computed_prompt_tokens: int
    """Prompt tokens the engine actually prefilled for this turn's requests."""


@dataclass(frozen=True)
class Latency:
    end_of_turn_to_first_token_ms: float | None
    end_of_turn_to_done_ms: float


@dataclass(frozen=True)
class ThinkingDelta:
    chunk_index: int
    delta: str


@dataclass(frozen=True)
class ThinkingDone:
    chunk_index: int
    tokens: int
    reason: Literal["budget", "time", "model", "interrupted", "end_of_turn"]


@dataclass(frozen=True)
class ChunkAppended:
    chunk_index: int
    tokens: int


@dataclass(frozen=True)
class TurnCommitted:
    turn_index: int
    input_tokens: int


@dataclass(frozen=True)
class ResponseCreated:
    response_id: str


@dataclass(frozen=True)
class AnswerDelta:
    response_id: str
    delta: str


@dataclass(frozen=True)
class ResponseDone:
    response_id: str
    status: Literal["completed", "cancelled", "incomplete", "failed"]
    text: str
    usage: Usage
    latency: Latency
    finish_reason: str | None = None


@dataclass(frozen=True)
class ErrorEvent:
    code: ErrorCode
    message: str
    event_type: str | None = None
    extra: dict[str, int] = field(default_factory=dict)


SessionEvent = (
    ThinkingDelta
    | ThinkingDone
    | ChunkAppended
    | TurnCommitted
    | ResponseCreated
    | AnswerDelta
    | ResponseDone
    | ErrorEvent
)
