"""The training recipe: layer maps, loss going down, exact resume, aux of another shape."""

import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from amortized.kv_prediction import PredictorError, PredictorFolder
from amortized.kv_prediction.config import WEIGHTS_NAME
from amortized.kv_prediction.training import (
    KVPredictionTrainer,
    TrainingConfig,
    pruned_layer_map,
)
from amortized.models import ModelFolder, TinyModelSpec, build_tiny_model
from amortized.models.shape import ModelShape
from tests.conftest import AMORTIZED
from tests.kv_prediction.conftest import train_predictor


def test_block_layer_maps_follow_the_paper():
    assert pruned_layer_map(8, [0, 4], "block") == [0, 0, 0, 0, 1, 1, 1, 1]
    assert pruned_layer_map(8, [0, 2, 4, 6], "block") == [0, 0, 1, 1, 2, 2, 3, 3]


def test_input_aligned_maps_match_layer_input_depths():
    # aux layer j's input has passed base layers [0, kept[j-1]+1, ...]: 0, 1 for [0, 4]
    assert pruned_layer_map(8, [0, 4]) == [0, 1, 1, 1, 1, 1, 1, 1]
    # 0, 1, 3, 5 for [0, 2, 4, 6]
    assert pruned_layer_map(8, [0, 2, 4, 6]) == [0, 1, 1, 2, 2, 3, 3, 3]
    assert pruned_layer_map(2, [0]) == [0, 0]


def test_training_lowers_the_loss_on_predicted_kv(trained_predictor: PredictorFolder):
    history = trained_predictor.config.training["history"]
    first, last = history[0], history[-1]
    assert last["step"] == 30
    assert last["aux_loss"] < first["aux_loss"]
    assert last["base_loss_predicted"] < first["base_loss_predicted"]
    assert trained_predictor.config.layer_map == [0, 0]


def test_resume_continues_exactly(tiny_llama: ModelFolder, corpus_file: Path, tmp_path: Path):
    straight = train_predictor(tiny_llama.path, corpus_file, tmp_path / "straight", steps=20)
    settings: dict[str, Any] = {
        "base": str(tiny_llama.path),
        "data": str(corpus_file),
        "out": str(tmp_path / "resumed"),
        "prune": 0.5,
        "seq_len": 64,
        "batch_size": 4,
        "checkpoint_every": 10,
        "eval_batches": 2,
        "min_prompt_tokens": 32,
    }
    KVPredictionTrainer(TrainingConfig(**settings, steps=10), log=lambda _: None).train()
    with pytest.raises(PredictorError, match="--resume"):
        KVPredictionTrainer(TrainingConfig(**settings, steps=20), log=lambda _: None).train()
    resumed = KVPredictionTrainer(TrainingConfig(**settings, steps=20), log=lambda _: None).train(
        resume=True
    )
    a, b = load_file(straight.path / WEIGHTS_NAME), load_file(resumed.path / WEIGHTS_NAME)
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def test_resume_refuses_other_settings(tiny_llama: ModelFolder, corpus_file: Path, tmp_path: Path):
    train_predictor(tiny_llama.path, corpus_file, tmp_path / "run", steps=10)
    config = TrainingConfig(
        base=str(tiny_llama.path),
        data=str(corpus_file),
        out=str(tmp_path / "run"),
        prune=0.5,
        seq_len=32,
        steps=20,
    )
    with pytest.raises(PredictorError, match="other settings"):
        KVPredictionTrainer(config, log=lambda _: None).train(resume=True)


def test_separate_auxiliary_with_other_head_geometry(
    tmp_path: Path, corpus_file: Path, tiny_qwen2: ModelFolder
):
    """A 1-layer Qwen2 with 2 KV heads of 64 predicting a 2-layer Qwen2 with 2 KV heads of 32."""
    shape = ModelShape(architecture="qwen2", num_layers=1, num_heads=2, num_kv_heads=2)
    aux = build_tiny_model(tmp_path / "aux", TinyModelSpec(shape=shape, seed=1))
    folder = train_predictor(
        tiny_qwen2.path, corpus_file, tmp_path / "out", steps=10, aux=str(aux.path)
    )
    assert folder.config.layer_map == [0, 0]
    assert folder.config.aux.geometry.kv_dim == 128
    assert folder.config.base.geometry.kv_dim == 64
    assert folder.config.aux.geometry.head_dim == 64
    assert folder.config.base.geometry.head_dim == 32


def test_config_rejects_bad_options(tmp_path: Path):
    with pytest.raises(PredictorError, match="exactly one of --aux PATH or --prune"):
        TrainingConfig(base="b", data="d", out="o")
    with pytest.raises(PredictorError, match="between 0 and 1"):
        TrainingConfig(base="b", data="d", out="o", prune=4)


def test_cli_train_and_show(tiny_llama: ModelFolder, corpus_file: Path, tmp_path: Path):
    out = tmp_path / "cli"
    train = [*AMORTIZED, "kvp", "train", "--base", str(tiny_llama.path), "--prune", "0.5"]
    train += ["--data", str(corpus_file), "--out", str(out), "--steps", "4", "--seq-len", "32"]
    train += ["--batch-size", "2", "--checkpoint-every", "2", "--layer-map", "block"]
    done = subprocess.run(train, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "kvp train" in done.stderr  # the progress bar
    assert f"--kv-predictor {out}" in done.stdout
    show = subprocess.run([*AMORTIZED, "kvp", "show", str(out)], capture_output=True, text=True)
    assert '"training_steps": 4' in show.stdout
    assert "block map" in show.stdout
    missing = subprocess.run(
        [
            *AMORTIZED,
            "kvp",
            "train",
            "--base",
            str(tiny_llama.path),
            "--prune",
            "0.5",
            "--data",
            str(tmp_path / "nope.txt"),
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].endswith("does not exist")
