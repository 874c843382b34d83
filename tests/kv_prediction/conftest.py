"""Predictor folders built in seconds from the session's tiny models."""

from pathlib import Path

import pytest

from amortized.kv_prediction import PredictorFolder
from amortized.kv_prediction.training import (
    KVPredictionTrainer,
    TrainingConfig,
    write_identity_predictor,
)
from amortized.models import ModelFolder
from amortized.models.corpus import dialogues, message_texts


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Training text: the seeded dialogues the tiny tokenizers were trained on."""
    path = tmp_path_factory.mktemp("kvp-data") / "corpus.txt"
    path.write_text("\n".join(message_texts(dialogues(7, 600))))
    return path


@pytest.fixture(scope="session")
def identity_predictor(
    tiny_llama: ModelFolder, tmp_path_factory: pytest.TempPathFactory
) -> PredictorFolder:
    """Auxiliary = base and identity maps: predictions equal the base's own K/V."""
    return write_identity_predictor(tiny_llama.path, tmp_path_factory.mktemp("kvp") / "identity")


def train_predictor(
    base: Path, data: Path, out: Path, steps: int = 30, **kw: object
) -> PredictorFolder:
    """A few quick training steps; enough to exercise the whole recipe."""
    settings: dict[str, object] = {
        "base": str(base),
        "data": str(data),
        "out": str(out),
        "seq_len": 64,
        "batch_size": 4,
        "steps": steps,
        "checkpoint_every": 10,
        "eval_batches": 2,
        "min_prompt_tokens": 32,
        **kw,
    }
    if "aux" not in settings:
        settings.setdefault("prune", 0.5)
    return KVPredictionTrainer(TrainingConfig(**settings), log=lambda _: None).train()  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def trained_predictor(
    tiny_llama: ModelFolder, corpus_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> PredictorFolder:
    """The tiny Llama's layer-pruned (0.5) auxiliary model and maps, trained for 30 steps."""
    return train_predictor(tiny_llama.path, corpus_file, tmp_path_factory.mktemp("kvp") / "trained")
