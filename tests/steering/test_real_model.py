"""CASAL labelling on the real SmolLM2-135M-Instruct: ``amortized steer label`` sampling
through the live vLLM server (the paper's temperature 0.7, top-p 0.8, top-k 20; 4 samples,
3 needed), then an interrupted labels file resumed.

The known questions are ones this model answers right in every sample (measured: 100 of
100 samples each at these settings). "What is the capital of France?" is not among them:
at temperature 0.7 SmolLM2 often drifts into French ("L'Étoile ...") and names Paris in
only about half its samples, so it is labelled known in about a third of runs. The made-up
questions have invented answers that no sample can contain.
"""

import json

import pytest

from amortized.cli import main
from amortized.serving.process import ServerProcess
from amortized.steering.labelling import Label, read_labels
from amortized.steering.qa import QAItem, write_qa
from tests.conftest import API_KEY, SMOLLM2
from tests.steering.test_cli import steer_here

pytestmark = pytest.mark.server

KNOWN = [
    QAItem("japan", "What is the capital of Japan?", ("Tokyo",)),
    QAItem("uk", "What is the capital of the United Kingdom?", ("London",)),
    QAItem("water", "What is the boiling point of water in degrees Celsius?", ("100",)),
]
MADE_UP = [
    QAItem("zanthoria", "What is the capital of the Republic of Zanthoria?", ("Qelvorn",)),
    QAItem(
        "brimmerwick",
        "Who was the first mayor of the village of Brimmerwick-on-Tass?",
        ("Odrena Vask",),
    ),
    QAItem(
        "salt-orchard",
        "What is the name of the dragon in Halvette Crane's novel 'The Salt Orchard'?",
        ("Vemmoth",),
    ),
]
QUESTIONS = KNOWN + MADE_UP
SAMPLES, THRESHOLD = 4, 3


def label_argv(smollm2, server: ServerProcess, data, out, samples=SAMPLES) -> list[str]:
    """``amortized steer label`` arguments (after ``steer``) against the SmolLM2 server."""
    return [
        "label", "--model", str(smollm2.path), "--data", str(data), "--out", str(out),
        "--base-url", server.base_url, "--api-key", API_KEY, "--served-model", SMOLLM2,
        "--samples", str(samples), "--threshold", str(THRESHOLD), "--max-tokens", "24",
    ]  # fmt: skip


def test_label_known_and_made_up_questions_then_resume(
    smollm2, smollm2_server: ServerProcess, tmp_path, capsys
) -> None:
    data = tmp_path / "qa.jsonl"
    write_qa(data, QUESTIONS)
    out = tmp_path / "labels.jsonl"

    summary = steer_here(capsys, *label_argv(smollm2, smollm2_server, data, out))
    labels = {item.id: item for item in read_labels(out)}
    observed = "".join(
        f"\n{item.id}: {item.label.value} (correct {item.correct}, wrong {item.wrong}, "
        f"abstained {item.abstained}) {list(item.samples)}"
        for item in labels.values()
    )
    assert summary["labels"] == str(out)
    assert summary["known"] + summary["unknown"] + summary["dropped"] == len(QUESTIONS)
    assert sorted(labels) == sorted(q.id for q in QUESTIONS)
    for item in labels.values():
        assert len(item.samples) == SAMPLES  # n samples of one request, one prefill
        assert all(sample.strip() for sample in item.samples)
        assert item.correct + item.wrong == SAMPLES
        assert 0 <= item.abstained <= item.wrong
    for question in KNOWN:
        assert labels[question.id].label is Label.KNOWN, labels[question.id]
    for question in MADE_UP:
        assert labels[question.id].label is Label.UNKNOWN, labels[question.id]
        assert labels[question.id].correct == 0
    assert summary["known"] == len(KNOWN)
    assert summary["unknown"] == len(MADE_UP)

    # An interrupted run: header, the first labels, and a line torn by the crash.
    lines = out.read_text().splitlines(keepends=True)
    header = json.loads(lines[0])
    assert header["options"]["samples"] == SAMPLES
    assert header["options"]["threshold"] == THRESHOLD
    kept = 1 + len(KNOWN)
    out.write_text("".join(lines[:kept]) + lines[kept][:20])
    first = read_labels(out)
    assert [item.id for item in first] == [q.id for q in KNOWN]
    resumed = steer_here(capsys, *label_argv(smollm2, smollm2_server, data, out))
    stored = read_labels(out)
    assert sorted(item.id for item in stored) == sorted(q.id for q in QUESTIONS)  # once each
    assert stored[: len(first)] == first  # earlier labels untouched, not redone
    assert all(item.label is Label.UNKNOWN for item in stored[len(first) :])
    assert resumed["known"] + resumed["unknown"] + resumed["dropped"] == len(QUESTIONS)
    assert len(out.read_text().splitlines()) == 1 + len(QUESTIONS)

    # Labels of another run (different options) are refused, not mixed in.
    code = main(["steer", *label_argv(smollm2, smollm2_server, data, out, samples=SAMPLES + 1)])
    assert code != 0
    assert "another run" in capsys.readouterr().err
    assert read_labels(out) == stored
    print(observed)  # after the last capsys read, so -s (or a failure) shows it
