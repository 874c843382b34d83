"""``amortized steer`` end to end on the tiny model: label through the live server, vectors
(+ GGUF), CASAL train and export, eval, sweep; the exported checkpoint's provenance reaches
``/v1/amortized/info``'s model list; ``--device``/``--dtype``; bad input ends with one
line."""

import json
import subprocess
import sys
from argparse import Namespace
from typing import Any

import pytest

from amortized.cli import main
from amortized.serving.routes.info.serving import ServerFacts
from amortized.steering.export import casal_provenance
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


@pytest.fixture(scope="module")
def unsupported_model(tiny_llama, tmp_path_factory):
    """A tiny GPT-2 folder: a causal LM transformers loads, whose layers steering refuses."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama.path)
    eos = tokenizer.eos_token_id
    sizes: dict[str, Any] = {"vocab_size": len(tokenizer), "n_embd": 32, "n_layer": 1, "n_head": 2}
    config = GPT2Config(**sizes, bos_token_id=eos, eos_token_id=eos)
    out = tmp_path_factory.mktemp("gpt2") / "tiny-gpt2"
    GPT2LMHeadModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def write_labels(path, count):
    """``count`` labelled questions, known and unknown in turn (the plumbing needs both)."""
    header = json.dumps({"amortized_labels": 1}) + "\n"
    rows = [
        {
            "id": q.id,
            "question": q.question,
            "answers": list(q.answers),
            "label": "known" if i % 2 == 0 else "unknown",
            "correct": 2 if i % 2 == 0 else 0,
            "wrong": 0 if i % 2 == 0 else 2,
            "abstained": 0,
            "samples": ["e", "e"],
        }
        for i, q in enumerate(QUESTIONS[:count])
    ]
    path.write_text(header + "".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_an_explicit_device_and_dtype(family, tiny_llama, tiny_families, tmp_path, capsys):
    """vectors, train and eval on a model placed with ``--device cpu --dtype bfloat16``."""
    model = str(tiny_llama.path if family == "llama" else tiny_families[family])
    labels = str(write_labels(tmp_path / "labels.jsonl", 8))
    placed = ["--device", "cpu", "--dtype", "bfloat16"]
    vectors = steer_here(
        capsys,
        "vectors", "--model", model, "--labels", labels, "--layers", "1",
        "--out", str(tmp_path / "vectors"), *placed,
    )  # fmt: skip
    assert set(vectors["vectors"]) == {"1"}
    assert vectors["norms"]["1"] > 0
    trained = steer_here(
        capsys,
        "train", "--model", model, "--labels", labels, "--layer", "1", "--lr", "1e-2",
        "--epochs", "20", "--out", str(tmp_path / "casal"), *placed,
    )  # fmt: skip
    assert trained["final_loss"] < trained["initial_loss"]
    assert (casal_provenance(trained["checkpoint"]) or {})["layer"] == 1
    metrics = steer_here(
        capsys,
        "eval", "--model", trained["checkpoint"], "--labels", labels,
        "--vector", vectors["vectors"]["1"], "--alpha", "1", *placed,
    )  # fmt: skip
    assert metrics["known"] + metrics["unknown"] == 8


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
        (
            ["vectors", "--model", "MODEL", "--labels", "LABELS", "--out", "o", "--device", "tpu"],
            "argument --device: 'tpu' is not a device",
        ),
        (
            ["train", "--model", "MODEL", "--labels", "LABELS", "--layer", "0", "--dtype", "int8"],
            "argument --dtype: invalid choice: 'int8'",
        ),
        (
            ["eval", "--model", "MODEL", "--labels", "LABELS", "--device", "cuda:99"],
            "--device cuda:99: ",
        ),
        (
            ["vectors", "--model", "GPT2", "--labels", "LABELS", "--out", "o"],
            "activation steering supports model_type llama, mistral, qwen2, qwen3, gemma",
        ),
    ],
)
def test_bad_input_is_one_line(argv, fragment, tiny_llama, unsupported_model, tmp_path):
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
    replace["GPT2"] = str(unsupported_model)
    argv = [replace.get(a, a) for a in argv]
    done = steer(*argv)
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr[-2000:]
    assert fragment in done.stderr
