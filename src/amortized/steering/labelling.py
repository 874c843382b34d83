"""Known / unknown labelling by sampling the model (through vLLM): ≥ threshold of the samples
correct → known, ≥ threshold wrong → unknown, otherwise dropped.

Labels are appended to a JSONL file as they arrive (one line per question, flushed and
fsynced per batch), so an interrupted run resumes where it stopped without redoing or
duplicating questions.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from tqdm import tqdm

from amortized.errors import AmortizedError
from amortized.llm.base import CompletionRequest, LLMBackend
from amortized.steering.judge import Judge, SubstringJudge
from amortized.steering.qa import QAItem, question_messages

FORMAT_VERSION = 1


class Label(StrEnum):
    KNOWN = "known"
    UNKNOWN = "unknown"
    DROPPED = "dropped"


@dataclass(frozen=True)
class LabellingOptions:
    """The paper's sampling: 10 answers at temperature 0.7, top-p 0.8, top-k 20; 7 of 10."""

    samples: int = 10
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    threshold: int = 7
    max_tokens: int = 32
    concurrency: int = 16
    """Questions in flight at once (each asks for ``samples`` completions in one request)."""

    def __post_init__(self) -> None:
        if self.samples < 1 or not 1 <= self.threshold <= self.samples:
            raise ValueError(
                f"need 1 <= threshold <= samples, got threshold {self.threshold} "
                f"and samples {self.samples}"
            )

    def fingerprint(self) -> dict[str, Any]:
        """What makes two labelling runs comparable (concurrency does not)."""
        data = asdict(self)
        data.pop("concurrency")
        return data


@dataclass(frozen=True)
class LabelledItem:
    id: str
    question: str
    answers: tuple[str, ...]
    label: Label
    correct: int
    wrong: int
    abstained: int
    samples: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["label"] = self.label.value
        data["answers"] = list(self.answers)
        data["samples"] = list(self.samples)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabelledItem:
        return cls(
            id=str(data["id"]),
            question=str(data["question"]),
            answers=tuple(data["answers"]),
            label=Label(data["label"]),
            correct=int(data["correct"]),
            wrong=int(data["wrong"]),
            abstained=int(data["abstained"]),
            samples=tuple(data["samples"]),
        )

    @property
    def item(self) -> QAItem:
        return QAItem(self.id, self.question, self.answers)


class LabelFileError(AmortizedError):
    """A labels file that belongs to another run or is not a labels file."""


def classify(
    samples: Sequence[str], gold: Sequence[str], judge: Judge, threshold: int
) -> tuple[Label, int, int, int]:
    correct = sum(judge.is_correct(s, gold) for s in samples)
    abstained = sum(judge.is_abstention(s) for s in samples)
    wrong = len(samples) - correct
    if correct >= threshold:
        return Label.KNOWN, correct, wrong, abstained
    if wrong >= threshold:
        return Label.UNKNOWN, correct, wrong, abstained
    return Label.DROPPED, correct, wrong, abstained


def _data_digest(items: Sequence[QAItem]) -> str:
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps([item.id, item.question, list(item.answers)]).encode())
    return digest.hexdigest()[:16]


def read_labels(path: str | os.PathLike[str]) -> list[LabelledItem]:
    """Every complete record of a labels file (a torn last line from a crash is skipped)."""
    header, records, _ = _read(Path(path))
    if header is None:
        raise LabelFileError(f"{path}: not an amortized labels file")
    return records


def _read(path: Path) -> tuple[dict[str, Any] | None, list[LabelledItem], int]:
    """Header, records, and the byte length of the intact part of the file."""
    if not path.exists():
        return None, [], 0
    raw = path.read_bytes()
    intact = raw.rfind(b"\n") + 1
    header = None
    records = []
    for number, line in enumerate(raw[:intact].decode("utf-8").splitlines()):
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise LabelFileError(f"{path}:{number + 1}: corrupt line ({error.msg})") from error
        if number == 0:
            header = data if isinstance(data, dict) and "amortized_labels" in data else None
            if header is None:
                return None, [], intact
            continue
        records.append(LabelledItem.from_json(data))
    return header, records, intact


async def label_questions(
    backend: LLMBackend,
    items: Sequence[QAItem],
    *,
    options: LabellingOptions | None = None,
    judge: Judge | None = None,
    out: str | os.PathLike[str] | None = None,
    chat: bool = True,
    progress: bool = False,
) -> list[LabelledItem]:
    """Label every item; with ``out``, resume from and append to that file."""
    options = options or LabellingOptions()
    judge = judge or SubstringJudge()
    header = {
        "amortized_labels": FORMAT_VERSION,
        "options": options.fingerprint(),
        "data": _data_digest(items),
        "chat": chat,
    }
    done: dict[str, LabelledItem] = {}
    handle = None
    if out is not None:
        path = Path(out)
        existing, records, intact = _read(path)
        if path.exists() and path.stat().st_size and existing is None:
            raise LabelFileError(f"{path} exists and is not a labels file; choose another --out")
        if existing is not None and existing != header:
            raise LabelFileError(
                f"{path} holds labels from another run (different data or options); "
                "delete it or choose another --out"
            )
        done = {r.id: r for r in records}
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("r+b" if path.exists() else "wb")
        handle.truncate(intact)
        handle.seek(intact)
        if existing is None:
            handle.write((json.dumps(header) + "\n").encode())

    todo = [item for item in items if item.id not in done]
    bar = tqdm(
        total=len(items),
        initial=len(items) - len(todo),
        desc="labelling",
        disable=not progress,
        file=sys.stderr,
    )

    async def one(item: QAItem) -> LabelledItem:
        prompt = question_messages(item.question) if chat else item.question
        completion = await backend.complete(
            CompletionRequest(
                prompt=prompt,
                max_tokens=options.max_tokens,
                temperature=options.temperature,
                top_p=options.top_p,
                top_k=options.top_k,
                logprobs=0,
                n=options.samples,
            )
        )
        samples = completion.samples or (completion.text,)
        label, correct, wrong, abstained = classify(samples, item.answers, judge, options.threshold)
        return LabelledItem(
            item.id, item.question, item.answers, label, correct, wrong, abstained, tuple(samples)
        )

    try:
        for start in range(0, len(todo), options.concurrency):
            batch = todo[start : start + options.concurrency]
            results = await asyncio.gather(*(one(item) for item in batch))
            for result in results:
                done[result.id] = result
            if handle is not None:
                handle.write("".join(json.dumps(r.to_json()) + "\n" for r in results).encode())
                handle.flush()
                os.fsync(handle.fileno())
            bar.update(len(batch))
    finally:
        bar.close()
        if handle is not None:
            handle.close()
    return [done[item.id] for item in items]


def label_counts(labels: Sequence[LabelledItem]) -> dict[str, int]:
    counts = {label.value: 0 for label in Label}
    for item in labels:
        counts[item.label.value] += 1
    return counts
