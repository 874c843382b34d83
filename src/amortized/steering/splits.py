"""Keeping selection data apart from test data: the layer and strength are chosen on a
validation split, and the split that scores a method must share no question with it."""

import random
from collections.abc import Sequence
from typing import Protocol, TypeVar

from amortized.errors import AmortizedError


class Question(Protocol):
    """A QA item or a labelled one: anything with an id and a question."""

    @property
    def id(self) -> str: ...

    @property
    def question(self) -> str: ...


Item = TypeVar("Item", bound=Question)


class SplitError(AmortizedError):
    """Two splits that must be disjoint share questions."""


def _keys(items: Sequence[Question]) -> tuple[set[str], set[str]]:
    return {i.id for i in items}, {" ".join(i.question.lower().split()) for i in items}


def check_disjoint(
    first: Sequence[Question], second: Sequence[Question], first_name: str, second_name: str
) -> None:
    """Refuse two splits with a question id or question text in common."""
    ids_a, questions_a = _keys(first)
    ids_b, questions_b = _keys(second)
    shared = max(len(ids_a & ids_b), len(questions_a & questions_b))
    if shared:
        raise SplitError(
            f"{first_name} and {second_name} share {shared} question(s); choose the layer and "
            "strength on validation data that the test split never contains"
        )


def validation_split(
    items: Sequence[Item], fraction: float = 0.25, seed: int = 0
) -> tuple[list[Item], list[Item]]:
    """``(train, validation)``: a seeded ``fraction`` of ``items`` held out for selection."""
    if not 0 < fraction < 1:
        raise SplitError(f"validation fraction must be between 0 and 1, not {fraction}")
    order = random.Random(seed).sample(range(len(items)), len(items))
    cut = max(1, round(len(items) * fraction))
    held = set(order[:cut])
    return (
        [item for index, item in enumerate(items) if index not in held],
        [item for index, item in enumerate(items) if index in held],
    )
