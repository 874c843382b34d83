"""Deciding whether an answer is correct or an abstention: pluggable, substring by default."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from amortized.steering.qa import DEFAULT_ABSTENTION


class Judge(Protocol):
    """What labelling and evaluation need to know about one answer."""

    def is_abstention(self, answer: str) -> bool: ...

    def is_correct(self, answer: str, gold: Sequence[str]) -> bool: ...


DEFAULT_ABSTENTION_PHRASES = (
    DEFAULT_ABSTENTION.rstrip(".").lower(),
    "i do not know",
    "i'm not sure",
    "i am not sure",
    "i cannot answer",
    "i can't answer",
)


@dataclass(frozen=True)
class SubstringJudge:
    """The paper's rule: case-insensitive substring match for both correctness and
    abstention. An abstention is never counted as correct."""

    abstention_phrases: tuple[str, ...] = DEFAULT_ABSTENTION_PHRASES

    def is_abstention(self, answer: str) -> bool:
        text = answer.lower().replace("\u2019", "'")
        return any(phrase in text for phrase in self.abstention_phrases)

    def is_correct(self, answer: str, gold: Sequence[str]) -> bool:
        if self.is_abstention(answer):
            return False
        text = answer.lower()
        return any(g.strip().lower() in text for g in gold if g.strip())
