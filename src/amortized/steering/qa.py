"""Question-answer data (JSONL with ``question`` and ``answers``) and the one prompt format
every stage uses, so labelling, capture, training and evaluation see identical tokens."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amortized.errors import AmortizedError

DEFAULT_ABSTENTION = "I don't know."
"""What the miniature's training text teaches the model to say; the default judge looks for it."""


class QADataError(AmortizedError):
    """A QA file that cannot be used; the message names the line and what to fix."""


@dataclass(frozen=True)
class QAItem:
    id: str
    question: str
    answers: tuple[str, ...]
    """Accepted answers (any one, as a case-insensitive substring, counts as correct)."""


def read_qa(path: str | os.PathLike[str]) -> list[QAItem]:
    """Items of a JSONL file: ``{"question": str, "answers": [str, ...], "id"?: str}``."""
    path = Path(path)
    if not path.is_file():
        raise QADataError(f"{path}: no such file")
    items: list[QAItem] = []
    seen: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise QADataError(f"{path}: not UTF-8 text ({error.reason})") from error
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise QADataError(f"{path}:{number}: not JSON ({error.msg})") from error
        items.append(_item(record, f"{path}:{number}", default_id=str(number - 1)))
        if items[-1].id in seen:
            raise QADataError(f"{path}:{number}: duplicate id {items[-1].id!r}")
        seen.add(items[-1].id)
    if not items:
        raise QADataError(f"{path}: no questions")
    return items


def _item(record: Any, where: str, default_id: str) -> QAItem:
    if not isinstance(record, dict):
        raise QADataError(f"{where}: expected an object with 'question' and 'answers'")
    question = record.get("question")
    answers = record.get("answers")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(question, str) or not question.strip():
        raise QADataError(f"{where}: 'question' must be a non-empty string")
    if (
        not isinstance(answers, list)
        or not answers
        or not all(isinstance(a, str) and a.strip() for a in answers)
    ):
        raise QADataError(f"{where}: 'answers' must be a non-empty list of strings")
    return QAItem(str(record.get("id", default_id)), question.strip(), tuple(answers))


def write_qa(path: str | os.PathLike[str], items: Iterable[QAItem]) -> None:
    with Path(path).open("w", encoding="utf-8") as handle:
        for item in items:
            record = {"id": item.id, "question": item.question, "answers": list(item.answers)}
            handle.write(json.dumps(record) + "\n")


def question_messages(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def question_prompt(tokenizer: Any, question: str) -> str:
    """The question as the model sees it: its chat template with the assistant turn opened
    (or ``Question: ...\\nAnswer:`` for a tokenizer without one). The last token of this text
    is where activations are read and steered."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            question_messages(question), tokenize=False, add_generation_prompt=True
        )
        return str(text)
    return f"Question: {question}\nAnswer:"


def answer_texts(items: Sequence[QAItem]) -> dict[str, tuple[str, ...]]:
    return {item.id: item.answers for item in items}
