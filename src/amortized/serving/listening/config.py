"""Per-session settings, as pydantic models so the WebSocket protocol can reuse them."""

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class ThinkingSchedule(StrEnum):
    """When the model thinks; the last two exist as baselines for the benchmark."""

    WHILE_LISTENING = "while_listening"
    """After each input chunk, over what has been heard so far (the point of this module)."""
    AFTER_TURN = "after_turn"
    """The whole budget after the user stops, then the answer (ordinary reasoning)."""
    OFF = "off"


class BargeIn(StrEnum):
    """What user input during an answer does to that answer."""

    CANCEL = "cancel"
    """Stop it and drop it from the history, as if it was never said."""
    TRUNCATE = "truncate"
    """Stop it and keep what was said so far in the history."""


class ThinkingConfig(BaseModel):
    """Budgets for thinking; per turn and per chunk, in tokens and optionally time."""

    model_config = ConfigDict(extra="forbid")

    schedule: ThinkingSchedule = ThinkingSchedule.WHILE_LISTENING
    budget_tokens: int = Field(default=256, ge=0, le=32768, description="Thinking tokens per turn.")
    chunk_tokens: int = Field(
        default=64, ge=1, le=32768, description="Most thinking tokens after one input chunk."
    )
    chunk_ms: float | None = Field(
        default=None, gt=0, description="Optional wall-clock limit for thinking after one chunk."
    )
    min_tokens: int = Field(
        default=0, ge=0, description="Think at least this long after a chunk unless interrupted."
    )
    temperature: float = Field(default=0.7, ge=0, le=2)
    top_p: float = Field(default=0.95, gt=0, le=1)
    emit: bool = Field(default=False, description="Send thinking.delta events to the client.")


class AnswerConfig(BaseModel):
    """How the answer is sampled."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(default=256, ge=1, le=32768)
    min_tokens: int = Field(default=0, ge=0, description="Ignore stop tokens until this long.")
    temperature: float = Field(default=0.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int | None = None


class SessionConfig(BaseModel):
    """Everything a client may set with ``session.update``."""

    model_config = ConfigDict(extra="forbid")

    instructions: str | None = Field(
        default=None, description="System prompt; settable until the first turn starts."
    )
    thinking: ThinkingConfig = Field(default_factory=ThinkingConfig)
    answer: AnswerConfig = Field(default_factory=AnswerConfig)
    barge_in: BargeIn = BargeIn.CANCEL
    think_open: str = "<think>"
    think_close: str = "</think>"
