"""Whether steering left the rest of the model alone: held-out perplexity on ordinary text and
greedy answers to a fixed set of prompts unrelated to the steered questions, base vs steered.

A model that learned to abstain should still answer "What is 12 times 7?"; one whose
perplexity rose has paid for abstention with general ability.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from amortized.steering.judge import Judge, SubstringJudge

GENERAL_PROMPTS = (
    "What is 12 times 7?",
    "Write one sentence about the sea.",
    "Translate 'good morning' into French.",
    "Name three primary colours.",
    "What does a for loop do in Python?",
    "Give a synonym for 'happy'.",
    "How many days are there in a week?",
    "Write a short greeting for a birthday card.",
    "What is the opposite of 'cold'?",
    "Sort these numbers: 5, 2, 9, 1.",
    "What is water made of?",
    "Suggest a name for a pet cat.",
)
"""Prompts whose answers do not depend on entity knowledge (fixed; never tuned on)."""


@dataclass(frozen=True)
class GeneralAbility:
    perplexity: float
    tokens: int
    """Tokens scored for the perplexity."""
    answers: tuple[str, ...]
    """Greedy answers to :data:`GENERAL_PROMPTS` (or the prompts given)."""


def text_perplexity(
    model: Any, tokenizer: Any, texts: Sequence[str], window: int = 256, max_windows: int = 32
) -> tuple[float, int]:
    """Teacher-forced perplexity over up to ``max_windows`` windows of ``window`` tokens cut
    from ``texts`` (each window starts at a text's start; a short text is scored whole)."""
    import torch

    from amortized.steering.capture import model_device

    device = model_device(model)
    total, count = 0.0, 0
    windows = 0
    for text in texts:
        ids = tokenizer(text)["input_ids"][:window]
        if len(ids) < 2:
            continue
        batch = torch.tensor([ids], device=device)
        with torch.no_grad():
            loss = model(input_ids=batch, labels=batch).loss
        total += float(loss) * (len(ids) - 1)
        count += len(ids) - 1
        windows += 1
        if windows >= max_windows:
            break
    if not count:
        raise ValueError("no text long enough to score (each needs at least 2 tokens)")
    return math.exp(total / count), count


def general_ability(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    prompts: Sequence[str] = GENERAL_PROMPTS,
    max_new_tokens: int = 24,
) -> GeneralAbility:
    """Perplexity on ``texts`` and greedy answers to ``prompts``."""
    from amortized.steering.steer import generate_answers

    perplexity, tokens = text_perplexity(model, tokenizer, texts)
    answers = generate_answers(model, tokenizer, list(prompts), max_new_tokens=max_new_tokens)
    return GeneralAbility(perplexity, tokens, tuple(answers))


def compare_ability(
    base: GeneralAbility, steered: GeneralAbility, judge: Judge | None = None
) -> dict[str, float]:
    """Relative perplexity change, the share of unrelated prompts answered identically, and
    the share the steered model refuses (abstention phrases) where the base did not."""
    judge = judge or SubstringJudge()
    if len(base.answers) != len(steered.answers):
        raise ValueError("both must answer the same prompts")
    same = sum(a.strip() == b.strip() for a, b in zip(base.answers, steered.answers, strict=True))
    refused = sum(
        judge.is_abstention(s) and not judge.is_abstention(b)
        for b, s in zip(base.answers, steered.answers, strict=True)
    )
    n = max(1, len(base.answers))
    return {
        "perplexity_change_relative": steered.perplexity / base.perplexity - 1,
        "same_answers": same / n,
        "new_refusals": refused / n,
        "prompts": float(len(base.answers)),
    }
