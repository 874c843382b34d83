"""Throwaway random tiny models (Llama or Qwen2, GQA) built in seconds for tests and demos."""

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amortized.models.corpus import dialogues, message_texts
from amortized.models.folder import (
    ModelFolder,
    staged_folder,
    validate_model_folder,
    write_manifest,
)
from amortized.models.shape import ModelShape, save_model_folder
from amortized.models.tokenizer import train_tokenizer


@dataclass(frozen=True)
class TinyModelSpec:
    """What to build: a shape, a tokenizer size and the seed for both."""

    shape: ModelShape = field(default_factory=ModelShape)
    vocab_size: int = 512
    seed: int = 0


def build_tiny_model(out: str | os.PathLike[str], spec: TinyModelSpec | None = None) -> ModelFolder:
    """Build a random-weight model folder at ``out`` (replaced if present); output is noise."""
    spec = spec or TinyModelSpec()
    target = Path(out)
    with staged_folder(target) as staging:
        tokenizer = train_tokenizer(message_texts(dialogues(spec.seed, 400)), spec.vocab_size)
        model = spec.shape.new_model(tokenizer, spec.seed)
        save_model_folder(model, tokenizer, staging, spec.shape)
        write_manifest(staging, {"kind": "tiny-random", **asdict(spec)})
    return validate_model_folder(target)
