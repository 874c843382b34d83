"""Deciding whether an answer is correct or an abstention: pluggable, substring by default.

The default abstention phrases are a documented list of common refusals; a model's own way of
refusing can be added with :func:`learn_abstention_phrases`, and :func:`judge_agreement`
measures a judge against hand labels.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

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
    "i'm not aware",
    "i am not aware",
    "i couldn't find",
    "i could not find",
    "i can't find",
    "i cannot find",
    "i don't have information",
    "i don't have any information",
    "i do not have information",
    "i do not have any information",
    "i have no information",
    "i don't have enough information",
    "i'm not familiar with",
    "i am not familiar with",
    "i'm unable to",
    "i am unable to",
    "i cannot provide",
    "i can't provide",
    "i cannot determine",
    "i can't determine",
    "there is no information",
    "no information available",
)
"""Common English refusals (lower case; curly apostrophes are normalised before matching)."""


@dataclass(frozen=True)
class SubstringJudge:
    """The paper's rule: case-insensitive substring match for both correctness and
    abstention. An abstention is never counted as correct."""

    abstention_phrases: tuple[str, ...] = DEFAULT_ABSTENTION_PHRASES

    def with_phrases(self, phrases: Iterable[str]) -> SubstringJudge:
        """This judge with more abstention phrases (e.g. learned ones)."""
        extra = tuple(p for p in (normalise(x) for x in phrases) if p)
        known = set(self.abstention_phrases)
        added = tuple(p for p in dict.fromkeys(extra) if p not in known)
        return replace(self, abstention_phrases=(*self.abstention_phrases, *added))

    def is_abstention(self, answer: str) -> bool:
        text = normalise(answer)
        return any(phrase in text for phrase in self.abstention_phrases)

    def is_correct(self, answer: str, gold: Sequence[str]) -> bool:
        if self.is_abstention(answer):
            return False
        text = answer.lower()
        return any(g.strip().lower() in text for g in gold if g.strip())


def normalise(text: str) -> str:
    """Lower-case words and apostrophes only, single spaces: "I\u2019m not sure, sorry."
    (curly apostrophe) and "i'm not sure sorry" read the same."""
    return " ".join(re.findall(r"[a-z0-9']+", text.lower().replace("\u2019", "'")))


def _openings(answer: str, lengths: range) -> set[str]:
    words = normalise(answer).split()
    return {" ".join(words[:n]) for n in lengths if len(words) >= n}


def learn_abstention_phrases(
    refusals: Sequence[str],
    answers: Sequence[str],
    *,
    min_share: float = 0.1,
    lengths: range = range(3, 7),
    limit: int = 20,
) -> list[str]:
    """Openings (3-6 words) that at least ``min_share`` of a model's refusals start with and
    none of its ordinary ``answers`` contain: how this model says "I don't know".

    ``refusals`` are answers a person (or the documented list) marked as abstentions, e.g.
    to questions about invented entities; ``answers`` are ones that are not, e.g. correct
    answers to known questions. The longest openings win over their own prefixes.
    """
    if not refusals:
        return []
    counts: Counter[str] = Counter()
    for refusal in refusals:
        counts.update(_openings(refusal, lengths))
    ordinary = [normalise(a) for a in answers]
    frequent = [
        phrase
        for phrase, count in counts.most_common()
        if count / len(refusals) >= min_share and not any(phrase in a for a in ordinary)
    ]
    # Prefer the shortest opening that is already specific enough: drop longer phrases that
    # contain a kept shorter one (the substring judge matches the shorter one anyway).
    kept: list[str] = []
    for phrase in sorted(frequent, key=lambda p: (len(p.split()), p)):
        if not any(shorter in phrase for shorter in kept):
            kept.append(phrase)
    return kept[:limit]


Verdict = Literal["correct", "wrong", "abstain"]


@dataclass(frozen=True)
class JudgedAnswer:
    """An answer to one question with its gold answers and a person's verdict."""

    answer: str
    gold: tuple[str, ...]
    verdict: Verdict


def verdict(judge: Judge, answer: str, gold: Sequence[str]) -> Verdict:
    """The judge's three-way call on one answer."""
    if judge.is_abstention(answer):
        return "abstain"
    return "correct" if judge.is_correct(answer, gold) else "wrong"


def judge_agreement(judge: Judge, sample: Sequence[JudgedAnswer]) -> float:
    """Share of hand-labelled answers on which the judge's verdict equals the person's."""
    if not sample:
        raise ValueError("the hand-labelled sample is empty")
    agree = sum(verdict(judge, s.answer, s.gold) == s.verdict for s in sample)
    return agree / len(sample)
