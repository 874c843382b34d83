"""The small interface every model backend implements, so capability logic never sees HTTP
or vLLM internals: one backend per way of reaching a model."""

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class TokenLogprobs:
    """One generated token: its text, where it starts in the output, and the top-k alternatives."""

    token: str
    offset: int
    top: Mapping[str, float]


@dataclass(frozen=True)
class CompletionRequest:
    """One prompt: raw text (no chat template) or chat messages, and how to decode."""

    prompt: str | Messages
    max_tokens: int
    json_schema: dict[str, Any] | None = None
    regex: str | None = None
    """Alternative to ``json_schema``: the answer's exact layout as a regular expression."""

    logprobs: int = 10
    label_codes: tuple[int, ...] = ()
    """The labels the prompt offers (for reading probabilities back)."""

    temperature: float = 0.0
    top_p: float = 0.7
    top_k: int | None = 50
    """``None`` leaves it to the server (endpoints other than vLLM reject ``top_k``)."""
    stop: tuple[str, ...] = ()
    n: int = 1
    """Samples of the same prompt (one prefill); all texts land in ``Completion.samples``."""


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: list[TokenLogprobs] | None
    prompt_tokens: int
    cached_tokens: int = 0
    """Prompt tokens served from the prefix cache (0 when the server does not report them)."""
    completion_tokens: int = 0
    finish_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    samples: tuple[str, ...] = ()
    """Every sample's text when ``n > 1`` (``text`` is the first)."""


class LLMBackend(ABC):
    """Runs prompts and counts tokens with the served model's own tokenizer."""

    @abstractmethod
    async def max_model_len(self) -> int: ...

    @abstractmethod
    async def count_tokens(self, prompt: str | Messages) -> int:
        """Tokens the prompt takes, chat template included for messages."""

    @abstractmethod
    async def complete(self, request: CompletionRequest) -> Completion: ...

    async def complete_many(self, requests: Sequence[CompletionRequest]) -> list[Completion]:
        """All ``requests``; concurrently by default (the server batches them)."""
        return list(await asyncio.gather(*(self.complete(r) for r in requests)))

    async def close(self) -> None:
        """Release connections; the default has none."""
        return None


def offsets_of(tokens: Sequence[str]) -> list[int]:
    """Start offset of each token in the concatenated text."""
    offsets, position = [], 0
    for token in tokens:
        offsets.append(position)
        position += len(token)
    return offsets
