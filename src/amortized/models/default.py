"""The default chat model: a small Llama trained from a seed in a few CPU minutes.

No hub is reachable where amortized is developed and tested, so the model every quickstart
and demo serves is built here: a byte-level BPE tokenizer and a ~4M-parameter Llama trained
on generated dialogues (see ``corpus``). It answers in the corpus' phrasing, which is
enough to see the whole stack work end to end; it is not a capable assistant.
"""

import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from amortized.config import BUILT_DEFAULT_MODEL_NAME, models_dir
from amortized.models.corpus import dialogues, message_texts
from amortized.models.folder import ModelFolder, ensure_folder, write_manifest
from amortized.models.shape import ModelShape, save_model_folder
from amortized.models.tokenizer import END_OF_TEXT, token_id, train_tokenizer
from amortized.models.training import train_causal_lm, warmup_cosine_lr

RECIPE_VERSION = 1
DEFAULT_MODEL_NAME = BUILT_DEFAULT_MODEL_NAME


@dataclass(frozen=True)
class DefaultModelRecipe:
    """Everything that determines the default model's weights, bit for bit on one machine kind."""

    seed: int = 0
    shape: ModelShape = field(
        default_factory=lambda: ModelShape(
            architecture="llama",
            hidden_size=256,
            num_layers=4,
            num_heads=4,
            num_kv_heads=2,
            intermediate_size=704,
        )
    )
    vocab_size: int = 2048
    dialogues: int = 20000
    seq_len: int = 256
    batch_size: int = 16
    steps: int = 170
    learning_rate: float = 3e-3
    warmup_steps: int = 20
    threads: int = 2

    def fingerprint(self) -> str:
        """Short hash naming the cache folder, so a changed recipe builds a new model."""
        blob = json.dumps({"version": RECIPE_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


def default_model_path(
    cache_dir: str | os.PathLike[str] | None = None, recipe: DefaultModelRecipe | None = None
) -> Path:
    """Where the default model for ``recipe`` lives in the cache."""
    recipe = recipe or DefaultModelRecipe()
    return models_dir(cache_dir) / f"{DEFAULT_MODEL_NAME}-{recipe.fingerprint()}"


def _token_stream(texts: list[str], tokenizer: PreTrainedTokenizerFast) -> torch.Tensor:
    """All texts tokenized back to back, each followed by END_OF_TEXT."""
    separator = token_id(tokenizer, END_OF_TEXT)
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer.encode(text))
        ids.append(separator)
    return torch.tensor(ids, dtype=torch.long)


def build_default_model(
    out: Path, recipe: DefaultModelRecipe | None = None, progress: bool = True
) -> dict[str, float]:
    """Train the default model into the empty folder ``out``; returns training statistics."""
    recipe = recipe or DefaultModelRecipe()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        chats = list(dialogues(recipe.seed, recipe.dialogues))
        tokenizer = train_tokenizer(message_texts(chats[:5000]), recipe.vocab_size)
        texts = [
            str(tokenizer.apply_chat_template(list(d.messages), tokenize=False)) for d in chats
        ]
        stream = _token_stream(texts, tokenizer)
        model = recipe.shape.new_model(tokenizer, recipe.seed)
        losses = train_causal_lm(
            model,
            stream,
            steps=recipe.steps,
            batch_size=recipe.batch_size,
            seq_len=recipe.seq_len,
            lr_at=lambda step: warmup_cosine_lr(
                step, recipe.learning_rate, recipe.warmup_steps, recipe.steps
            ),
            seed=recipe.seed,
            desc="training default model",
            progress=progress,
        )
        save_model_folder(model, tokenizer, out, recipe.shape)
        stats = {
            "final_loss": sum(losses[-10:]) / min(10, len(losses)),
            "first_loss": losses[0],
            "tokens": float(len(stream)),
        }
        write_manifest(
            out,
            {
                "kind": "default",
                "fingerprint": recipe.fingerprint(),
                "python": sys.version.split()[0],
                "stats": stats,
                **asdict(recipe),
            },
        )
        return stats
    finally:
        torch.set_num_threads(previous_threads)


def ensure_default_model(
    cache_dir: str | os.PathLike[str] | None = None,
    recipe: DefaultModelRecipe | None = None,
    log: Callable[[str], None] | None = None,
) -> ModelFolder:
    """The default model's folder, built first if it is missing or corrupt."""
    recipe = recipe or DefaultModelRecipe()
    target = default_model_path(cache_dir, recipe)
    say = log or (lambda message: print(f"amortized: {message}", file=sys.stderr))
    if not target.exists():
        say(f"building the default model into {target} (a few minutes, once)")

    def build(staging: Path) -> None:
        build_default_model(staging, recipe)

    return ensure_folder(target, build, say)
