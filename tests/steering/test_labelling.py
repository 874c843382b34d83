"""Judging, labelling by sampling through the live vLLM server (resumable), and metrics."""

import asyncio
import json

import pytest

from amortized.llm import OpenAICompatibleBackend
from amortized.steering.evaluation import score_answers
from amortized.steering.judge import SubstringJudge
from amortized.steering.labelling import (
    Label,
    LabelFileError,
    LabelledItem,
    LabellingOptions,
    classify,
    label_questions,
    read_labels,
)
from amortized.steering.qa import QADataError, QAItem, read_qa
from tests.conftest import API_KEY


def test_substring_judge():
    judge = SubstringJudge()
    assert judge.is_correct("It is Paris, of course.", ["paris"])
    assert not judge.is_correct("I don't know. Maybe Paris?", ["Paris"])  # abstention wins
    assert judge.is_abstention("Honestly, I DON\u2019T KNOW")
    assert not judge.is_abstention("Lyon")
    assert not judge.is_correct("Lyon", ["Paris", "Île-de-France"])


def test_classify_thresholds():
    judge = SubstringJudge()
    gold = ["blue"]
    assert classify(["blue"] * 7 + ["red"] * 3, gold, judge, 7)[0] is Label.KNOWN
    assert classify(["red"] * 7 + ["blue"] * 3, gold, judge, 7)[0] is Label.UNKNOWN
    label, correct, wrong, abstained = classify(["blue"] * 5 + ["I don't know"] * 5, gold, judge, 7)
    assert (label, correct, wrong, abstained) == (Label.DROPPED, 5, 5, 5)
    with pytest.raises(ValueError, match="threshold"):
        LabellingOptions(samples=5, threshold=7)


def item(i: int, label: Label, answer: str = "blue") -> LabelledItem:
    return LabelledItem(str(i), f"q{i}", (answer,), label, 0, 0, 0, ())


def test_metrics_on_hand_made_answers():
    labelled = [
        item(0, Label.KNOWN),
        item(1, Label.KNOWN),
        item(2, Label.KNOWN),
        item(3, Label.KNOWN),
        item(4, Label.UNKNOWN),
        item(5, Label.UNKNOWN),
        item(6, Label.DROPPED),
    ]
    answers = ["blue", "Blue!", "red", "I don't know.", "green", "I don't know.", "blue"]
    metrics = score_answers(labelled, answers)
    assert metrics.known == 4
    assert metrics.unknown == 2
    assert metrics.known_accuracy == 0.5
    assert metrics.refusal_on_known == 0.25
    assert metrics.hallucination == 0.5
    assert metrics.unknown_abstention == 0.5
    assert metrics.overall_accuracy == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="answers"):
        score_answers(labelled, answers[:-1])


def test_qa_file_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answers": ["a"]}\n{"question": "", "answers": ["a"]}\n')
    with pytest.raises(QADataError, match=r"bad.jsonl:2: 'question'"):
        read_qa(bad)
    bad.write_text('{"question": "q", "answers": []}\n')
    with pytest.raises(QADataError, match="answers"):
        read_qa(bad)
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(QADataError, match="UTF-8"):
        read_qa(bad)
    good = tmp_path / "good.jsonl"
    good.write_text('{"question": "Capital of X?", "answers": "Y"}\n\n')
    assert read_qa(good) == [QAItem("0", "Capital of X?", ("Y",))]


QUESTIONS = [QAItem(str(i), f"What is the colour of thing {i}?", ("blue",)) for i in range(24)]


@pytest.mark.server
async def test_labelling_resumes_after_interruption(live_server, tmp_path):
    out = tmp_path / "labels.jsonl"
    options = LabellingOptions(samples=4, threshold=3, max_tokens=8, concurrency=4)
    backend = OpenAICompatibleBackend(live_server.base_url, API_KEY, "tiny")
    task = asyncio.create_task(label_questions(backend, QUESTIONS, options=options, out=out))
    while not out.exists() or len(out.read_text().splitlines()) < 1 + 8:
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    first = read_labels(out)
    assert 8 <= len(first) < len(QUESTIONS)
    # a crash mid-write leaves a torn last line: it is dropped and redone
    with out.open("a") as handle:
        handle.write('{"id": "torn", "quest')
    labels = await label_questions(backend, QUESTIONS, options=options, out=out)
    await backend.close()
    assert [label.id for label in labels] == [q.id for q in QUESTIONS]
    stored = read_labels(out)
    assert sorted(r.id for r in stored) == sorted(q.id for q in QUESTIONS)  # once each
    assert stored[: len(first)] == first  # earlier labels untouched
    for label in labels:
        assert len(label.samples) == 4  # n=4 samples in one request each
        assert label.correct + label.wrong == 4
    lines = out.read_text().splitlines()
    assert json.loads(lines[0])["options"]["samples"] == 4
    # a different run's labels are not silently mixed in
    backend = OpenAICompatibleBackend(live_server.base_url, API_KEY, "tiny")
    with pytest.raises(LabelFileError, match="another run"):
        await label_questions(
            backend, QUESTIONS, options=LabellingOptions(samples=5, threshold=3), out=out
        )
    await backend.close()
