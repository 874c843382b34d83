"""LLM cost accounting: per task, per instance, and the amortization it buys."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Prices:
    """Dollars per million tokens; zero when the model is self-hosted."""

    prompt_per_million: float = 0.0
    completion_per_million: float = 0.0


@dataclass
class Usage:
    """LLM calls and tokens spent; added up across rounds and requests."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, prompt_tokens: int, completion_tokens: int, calls: int = 1) -> None:
        self.calls += calls
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def __iadd__(self, other: Usage) -> Usage:
        self.add(other.prompt_tokens, other.completion_tokens, other.calls)
        return self

    def dollars(self, prices: Prices) -> float:
        return (
            self.prompt_tokens * prices.prompt_per_million
            + self.completion_tokens * prices.completion_per_million
        ) / 1e6


@dataclass(frozen=True)
class CostReport:
    """What a task cost and what that comes to per instance served with the program."""

    usage: Usage
    instances: int
    dollars: float
    tokens_per_instance: float
    calls_per_instance: float
    dollars_per_instance: float

    @classmethod
    def of(cls, usage: Usage, instances: int, prices: Prices | None = None) -> CostReport:
        n = max(instances, 1)
        dollars = usage.dollars(prices or Prices())
        return cls(
            usage=Usage(usage.calls, usage.prompt_tokens, usage.completion_tokens),
            instances=instances,
            dollars=dollars,
            tokens_per_instance=usage.total_tokens / n,
            calls_per_instance=usage.calls / n,
            dollars_per_instance=dollars / n,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["usage"]["total_tokens"] = self.usage.total_tokens
        return data


def amortization_ratio(
    direct_tokens_per_instance: float, program_tokens: float, instances: int
) -> float:
    """How many times fewer LLM tokens per instance one program costs than one call each.

    ``program_tokens`` is the whole IPP run (all rounds); it is spread over ``instances``.
    """
    if program_tokens <= 0:
        return float("inf")
    return direct_tokens_per_instance * instances / program_tokens
