"""The training recipe: layer maps, loss going down, exact resume, aux of another shape,
document-aligned windows, the summed K/V loss, pruning, bf16 and gradient checkpointing."""

import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from amortized.kv_prediction import PredictorError, PredictorFolder
from amortized.kv_prediction.config import WEIGHTS_NAME
from amortized.kv_prediction.projections import decoder_layers
from amortized.kv_prediction.runtime import load_hf_model
from amortized.kv_prediction.training import (
    KVPredictionTrainer,
    TrainingConfig,
    document_windows,
    load_documents,
    prune_layers,
    pruned_layer_map,
    split_windows,
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


def test_windows_start_at_document_starts():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10, 11, 12], [13, 14], [15]]
    windows = document_windows(docs, 4)
    # [1,2,3] + [4,5] cut at 4 (5 dropped, not continued); the long one split at its start;
    # [13,14] + [15] is too short for a window.
    assert windows == [[1, 2, 3, 4], [6, 7, 8, 9]]
    starts = {doc[0] for doc in docs}
    assert all(window[0] in starts for window in windows)


def test_held_out_windows_share_no_document():
    docs = [[100 * d + t for t in range(5)] for d in range(20)]
    train, held = split_windows(docs, 8, 0.2)
    train_docs = {int(t) // 100 for t in train.flatten()}
    held_docs = {int(t) // 100 for t in held.flatten()}
    assert train_docs.isdisjoint(held_docs)
    assert held_docs == {16, 17, 18, 19}
    with pytest.raises(PredictorError, match="too few"):
        split_windows([[1, 2]], 8, 0.2)


def test_text_documents_are_blank_line_blocks(tiny_llama: ModelFolder, tmp_path: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama.path))
    data = tmp_path / "data.txt"
    data.write_text("first block\nstill first\n\n  \nsecond block\n\n\nthird\n")
    documents = load_documents(data, tokenizer)
    assert len(documents) == 3
    plain = tokenizer("second block", add_special_tokens=True)["input_ids"]
    assert documents[1] == [*plain, tokenizer.eos_token_id]


def test_pruning_builds_only_the_kept_layers(tiny_llama: ModelFolder):
    base: Any = load_hf_model(tiny_llama.path, torch.bfloat16)
    aux: Any
    aux, kept = prune_layers(base, 0.5)
    assert kept == [0]
    assert len(decoder_layers(aux)) == 1
    assert aux.config.num_hidden_layers == 1
    assert base.config.num_hidden_layers == 2  # the base's own config is untouched
    assert all(p.dtype == torch.float32 for p in aux.parameters())
    for name, tensor in aux.state_dict().items():
        torch.testing.assert_close(tensor, base.state_dict()[name].float())
    # Separate storage: training the auxiliary model never moves the frozen base.
    base_pointers = {p.data_ptr() for p in base.parameters()}
    assert not base_pointers & {p.data_ptr() for p in aux.parameters()}


def kv_trainer(base: Path, data: Path, out: Path, **kw: Any) -> KVPredictionTrainer:
    config = TrainingConfig(
        base=str(base), data=str(data), out=str(out), prune=0.5, seq_len=32, batch_size=2, **kw
    )
    return KVPredictionTrainer(config, log=lambda _: None)


def test_kv_loss_is_summed_over_layers_by_default(
    tiny_llama: ModelFolder, corpus_file: Path, tmp_path: Path
):
    summed = kv_trainer(tiny_llama.path, corpus_file, tmp_path / "sum")
    averaged = kv_trainer(tiny_llama.path, corpus_file, tmp_path / "mean", kv_loss="mean")
    layers = summed.base_geometry.num_layers
    batch = summed.batch(0)
    with torch.no_grad():
        a, b = summed.losses(batch), averaged.losses(batch)
    torch.testing.assert_close(a["kv_l1"], b["kv_l1"])
    torch.testing.assert_close(a["total"] - a["base"] - a["aux"], a["kv_l1"] * layers)
    torch.testing.assert_close(b["total"] - b["base"] - b["aux"], b["kv_l1"])


def gradients(trainer: KVPredictionTrainer) -> list[torch.Tensor]:
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.losses(trainer.batch(0), backward=True)
    params = [*trainer.aux.parameters(), *trainer.maps.parameters()]
    return [p.grad.clone() for p in params if p.grad is not None]


def test_gradient_checkpointing_gives_the_same_gradients(
    tiny_llama: ModelFolder, corpus_file: Path, tmp_path: Path
):
    plain = gradients(kv_trainer(tiny_llama.path, corpus_file, tmp_path / "a"))
    checkpointed_trainer = kv_trainer(
        tiny_llama.path, corpus_file, tmp_path / "b", gradient_checkpointing=True
    )
    assert checkpointed_trainer.aux.is_gradient_checkpointing
    checkpointed = gradients(checkpointed_trainer)
    assert len(plain) == len(checkpointed) > 0
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_bf16_training_keeps_trained_weights_in_fp32(
    tiny_llama: ModelFolder, corpus_file: Path, tmp_path: Path
):
    trainer = kv_trainer(
        tiny_llama.path, corpus_file, tmp_path / "bf16", precision="bf16", device="cpu", steps=6
    )
    assert next(trainer.base.parameters()).dtype == torch.bfloat16
    folder = trainer.train()
    assert all(p.dtype == torch.float32 for p in trainer.aux.parameters())
    assert all(p.dtype == torch.float32 for p in trainer.maps.parameters())
    history = folder.config.training["history"]
    assert all(torch.isfinite(torch.tensor(h["base_loss_predicted"])) for h in history)
    assert folder.config.training["settings"]["precision"] == "bf16"


def test_lm_objective_trains_only_the_auxiliary_model(
    tiny_llama: ModelFolder, corpus_file: Path, tmp_path: Path
):
    trainer = kv_trainer(tiny_llama.path, corpus_file, tmp_path / "lm", objective="lm", steps=8)
    trainer.initialise_maps()  # train() repeats this deterministic least-squares fit
    maps_before = {k: v.clone() for k, v in trainer.maps.state_dict().items()}
    aux_before = [p.detach().clone() for p in trainer.aux.parameters()]
    folder = trainer.train()
    for name, tensor in trainer.maps.state_dict().items():
        torch.testing.assert_close(tensor, maps_before[name])  # maps keep their initial fit
    assert any(
        not torch.equal(a, p) for a, p in zip(aux_before, trainer.aux.parameters(), strict=True)
    )
    history = folder.config.training["history"]
    assert history[-1]["aux_loss"] < history[0]["aux_loss"]
    assert folder.config.training["settings"]["objective"] == "lm"


def test_time_budget_sets_the_step_count(
    tiny_llama: ModelFolder, corpus_file: Path, tmp_path: Path
):
    trainer = kv_trainer(tiny_llama.path, corpus_file, tmp_path / "budget", steps=10_000)
    trainer.config = replace(trainer.config, time_budget_s=1.0)
    trainer.plan_steps(step_seconds=0.01)  # 1 s at 10 ms per step, evaluations included
    planned = trainer.total_steps
    assert 10 < planned < 100
    trainer.plan_steps(step_seconds=1.0)  # planned once: a later estimate changes nothing
    assert trainer.total_steps == planned
    trainer.config = replace(trainer.config, time_budget_s=3.0)
    trainer.state.planned_steps = None
    folder = trainer.train()
    steps = folder.config.training["steps"]
    assert steps == trainer.total_steps < 10_000
    assert folder.config.training["train_seconds"] > 0
    with pytest.raises(PredictorError, match="--time-budget"):
        TrainingConfig(base="b", data="d", out="o", prune=0.5, time_budget_s=0)
