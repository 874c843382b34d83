"""Hallucination, refusal and accuracy for base, inference-time steering and CASAL, on the
same labelled questions (labels come from sampling the base model)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

from amortized.steering.judge import Judge, SubstringJudge
from amortized.steering.labelling import Label, LabelledItem


@dataclass(frozen=True)
class SteeringMetrics:
    hallucination: float
    """Unknown questions answered without abstaining (lower is better)."""
    refusal_on_known: float
    """Known questions met with an abstention (lower is better)."""
    known_accuracy: float
    """Known questions answered correctly."""
    overall_accuracy: float
    """Correct answers over all labelled questions."""
    unknown_abstention: float
    known: int
    unknown: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_answers(
    labelled: Sequence[LabelledItem], answers: Sequence[str], judge: Judge | None = None
) -> SteeringMetrics:
    """Metrics over ``labelled`` (dropped questions are left out)."""
    judge = judge or SubstringJudge()
    if len(labelled) != len(answers):
        raise ValueError(f"{len(labelled)} questions but {len(answers)} answers")
    known = [(i, a) for i, a in zip(labelled, answers, strict=True) if i.label is Label.KNOWN]
    unknown = [(i, a) for i, a in zip(labelled, answers, strict=True) if i.label is Label.UNKNOWN]

    def rate(pairs: list[tuple[LabelledItem, str]], hit: Any) -> float:
        return sum(1 for item, answer in pairs if hit(item, answer)) / len(pairs) if pairs else 0.0

    counted = known + unknown
    return SteeringMetrics(
        hallucination=rate(unknown, lambda _i, a: not judge.is_abstention(a)),
        refusal_on_known=rate(known, lambda _i, a: judge.is_abstention(a)),
        known_accuracy=rate(known, lambda i, a: judge.is_correct(a, i.answers)),
        overall_accuracy=rate(counted, lambda i, a: judge.is_correct(a, i.answers)),
        unknown_abstention=rate(unknown, lambda _i, a: judge.is_abstention(a)),
        known=len(known),
        unknown=len(unknown),
    )


@dataclass(frozen=True)
class SteeringSpec:
    """Inference-time steering: add ``alpha · vector`` to layer ``layer``'s output."""

    layer: int
    vector: Any
    alpha: float


def evaluate_model(
    model: Any,
    tokenizer: Any,
    labelled: Sequence[LabelledItem],
    *,
    judge: Judge | None = None,
    steer: SteeringSpec | None = None,
    max_new_tokens: int = 16,
    progress: bool = False,
) -> tuple[SteeringMetrics, list[str]]:
    """Greedy answers from a transformers model (optionally steered) and their metrics."""
    from amortized.steering.steer import generate_answers, steering

    context = steering(model, steer.layer, steer.vector, steer.alpha) if steer else nullcontext()
    with context:
        answers = generate_answers(
            model,
            tokenizer,
            [item.question for item in labelled],
            max_new_tokens=max_new_tokens,
            progress=progress,
        )
    return score_answers(labelled, answers, judge), answers
