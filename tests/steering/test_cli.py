"""``amortized steer`` end to end on the tiny model: label through the live server, vectors
(+ GGUF), CASAL train and export, eval, sweep; the exported checkpoint's provenance reaches
``/v1/amortized/info``'s model list; bad input ends with one line."""

import json
import subprocess
import sys
from argparse import Namespace

import pytest

from amortized.cli import main
from amortized.serving.routes.info.serving import ServerFacts
from amortized.steering.labelling import read_labels
from amortized.steering.qa import QAItem, write_qa
from tests.conftest import API_KEY

# A random tiny model never knows anything; a one-letter gold answer that its samples often
# contain gives both "known" and "unknown" labels, which is all the plumbing needs.
QUESTIONS = [QAItem(str(i), f"Which letter comes in word {i}?", ("e",)) for i in range(30)]


def steer(*argv):
    """``amortized steer ...`` in a subprocess (the real entry point, one-line errors)."""
    command = [sys.executable, "-m", "amortized", "steer", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def steer_here(capsys, *argv):
    """``amortized steer ...`` in this process (torch is loaded once): its JSON summary."""
    code = main(["steer", *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    return json.loads(captured.out.strip().splitlines()[-1])


@pytest.mark.server
@pytest.mark.slow
def test_pipeline_through_the_cli(live_server, tiny_llama, tmp_path, capsys):
    data = tmp_path / "qa.jsonl"
    write_qa(data, QUESTIONS)
    labels = tmp_path / "labels.jsonl"
    summary = steer_here(
        capsys,
            "label", "--model", str(tiny_llama.path), "--data", str(data), "--out", str(labels),
            "--base-url", live_server.base_url, "--api-key", API_KEY, "--served-model", "tiny",
            "--samples", "2", "--threshold", "1", "--max-tokens", "8",
    )  # fmt: skip
    assert summary["known"] + summary["unknown"] + summary["dropped"] == 30
    assert summary["known"] > 0
    assert summary["unknown"] > 0
    assert len(read_labels(labels)) == 30

    vectors = steer_here(
        capsys,
            "vectors", "--model", str(tiny_llama.path), "--labels", str(labels),
            "--out", str(tmp_path / "vectors"), "--gguf", str(tmp_path / "cv.gguf"),
    )  # fmt: skip
    assert set(vectors["vectors"]) == {"0", "1"}
    assert (tmp_path / "cv.gguf").stat().st_size > 0

    trained = steer_here(
        capsys,
            "train", "--model", str(tiny_llama.path), "--labels", str(labels), "--layer", "1",
            "--alpha", "4", "--epochs", "20", "--out", str(tmp_path / "casal"),
    )  # fmt: skip
    assert trained["final_loss"] < trained["initial_loss"]
    facts = ServerFacts.from_args(Namespace(model=trained["checkpoint"]), (), "0.32")
    assert facts.models[0].casal is not None
    assert facts.models[0].casal["layer"] == 1
    plain = ServerFacts.from_args(Namespace(model=str(tiny_llama.path)), (), "0.32")
    assert plain.models[0].casal is None

    metrics = steer_here(
        capsys,
            "eval", "--model", trained["checkpoint"], "--labels", str(labels),
            "--answers", str(tmp_path / "answers.jsonl"),
    )  # fmt: skip
    assert metrics["known"] + metrics["unknown"] == summary["known"] + summary["unknown"]
    assert len((tmp_path / "answers.jsonl").read_text().splitlines()) == 30

    steered = steer_here(
        capsys,
            "eval", "--model", str(tiny_llama.path), "--labels", str(labels),
            "--vector", str(tmp_path / "vectors" / "layer-1.safetensors"), "--alpha", "2",
    )  # fmt: skip
    assert 0.0 <= steered["hallucination"] <= 1.0

    # Fit, choose and score on three disjoint thirds. The tiny model's sampled labels can be
    # lopsided (CI once drew a third with no unknown question), and the sweep's plumbing is
    # what is tested here, so labels alternate: every third gets five of each.
    header, *records = labels.read_text().splitlines()
    relabelled = []
    for number, record in enumerate(records):
        data = json.loads(record)
        data["label"] = "known" if number % 2 == 0 else "unknown"
        relabelled.append(json.dumps(data))
    chosen_on, scored = tmp_path / "validation.jsonl", tmp_path / "test.jsonl"
    fitted = tmp_path / "fit.jsonl"
    for path, start in ((fitted, 0), (chosen_on, 1), (scored, 2)):
        path.write_text("\n".join([header, *relabelled[start::3]]) + "\n")
    sweep = steer_here(
        capsys,
            "sweep", "--model", str(tiny_llama.path), "--labels", str(fitted),
            "--validation", str(chosen_on), "--test", str(scored), "--layers", "0,1",
            "--alphas", "1,4", "--out", str(tmp_path / "sweep.json"),
    )  # fmt: skip
    assert len(sweep["rows"]) == 4
    assert {r["layer"] for r in sweep["rows"]} == {0, 1}
    recorded = json.loads((tmp_path / "sweep.json").read_text())
    assert len(recorded["validation"]["ids"]) == 10
    scored_once = steer_here(
        capsys,
            "eval", "--model", str(tiny_llama.path), "--labels", str(scored),
            "--sweep", str(tmp_path / "sweep.json"),
    )  # fmt: skip
    assert scored_once["known"] + scored_once["unknown"] <= 10
    leaked = steer("eval", "--model", str(tiny_llama.path), "--labels", str(chosen_on),
                   "--sweep", str(tmp_path / "sweep.json"))  # fmt: skip
    assert leaked.returncode != 0
    assert leaked.stderr.strip().splitlines() == [leaked.stderr.strip().splitlines()[-1]]
    assert "share 10 question(s)" in leaked.stderr


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (
            ["label", "--model", "/nonexistent", "--data", "/nonexistent.jsonl", "--out", "x"],
            "no such file",
        ),
        (
            ["vectors", "--model", "/nonexistent", "--labels", "x", "--out", "y"],
            "x: no such labels file",
        ),
        (
            ["train", "--model", "MODEL", "--labels", "/none.jsonl", "--layer", "0", "--out", "o"],
            "no such labels file",
        ),
        (
            ["sweep", "--model", "MODEL", "--labels", "x", "--validation", "y", "--alphas", "a,b"],
            "comma-separated numbers",
        ),
        (
            ["sweep", "--model", "MODEL", "--labels", "LABELS", "--eval", "LABELS"],
            "renamed --validation",
        ),
        (
            ["sweep", "--model", "MODEL", "--labels", "LABELS", "--validation", "LABELS"],
            "--labels and --validation share 2 question(s)",
        ),
        (
            [
                "sweep",
                "--model",
                "MODEL",
                "--labels",
                "LABELS",
                "--validation",
                "OTHER",
                "--test",
                "OTHER",
            ],
            "--validation and --test share 1 question(s)",
        ),
        (
            ["label", "--model", "MODEL", "--data", "DATA", "--out", "o", "--samples", "3"],
            "threshold",
        ),
    ],
)
def test_bad_input_is_one_line(argv, fragment, tiny_llama, tmp_path):
    data = tmp_path / "qa.jsonl"
    write_qa(data, QUESTIONS[:2])
    labels, other = tmp_path / "labels.jsonl", tmp_path / "other.jsonl"
    record = {"label": "known", "correct": 1, "wrong": 0, "abstained": 0, "samples": ["e"]}
    rows = [{"id": q.id, "question": q.question, "answers": list(q.answers), **record}
            for q in QUESTIONS[:3]]  # fmt: skip
    header = json.dumps({"amortized_labels": 1}) + "\n"
    labels.write_text(header + "".join(json.dumps(r) + "\n" for r in rows[:2]))
    other.write_text(header + json.dumps(rows[2]) + "\n")
    replace = {"MODEL": str(tiny_llama.path), "DATA": str(data), "LABELS": str(labels)}
    replace["OTHER"] = str(other)
    argv = [replace.get(a, a) for a in argv]
    done = steer(*argv)
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr[-2000:]
    assert fragment in done.stderr
