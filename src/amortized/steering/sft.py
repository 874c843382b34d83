"""The SFT baseline: fine-tune the whole model on the same labelled questions, with an answer
as target for known questions and the abstention phrase for unknown ones.

The known target is, by default, one of the model's own sampled answers that the judge found
correct (labelling kept them): it teaches when to answer without also teaching a new answer
format, which a bare gold string ("Paris" for a model that says "It is Paris.") would."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tqdm import tqdm

from amortized.steering.judge import Judge, SubstringJudge
from amortized.steering.labelling import Label, LabelledItem
from amortized.steering.qa import DEFAULT_ABSTENTION, question_messages, question_prompt

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class SFTConfig:
    epochs: int = 3
    lr: float = 1e-4
    batch_size: int = 16
    seed: int = 0
    abstention: str = DEFAULT_ABSTENTION
    known_target: Literal["sample", "gold"] = "sample"
    """"sample": a correct answer the model gave while being labelled (falls back to the
    gold answer when none is stored); "gold": the QA file's first answer."""

    def __post_init__(self) -> None:
        if self.known_target not in ("sample", "gold"):
            raise ValueError(f"known_target must be 'sample' or 'gold', not {self.known_target!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")


@dataclass(frozen=True)
class SFTResult:
    wall_seconds: float
    examples: int
    losses: list[float] = field(default_factory=list)


def known_target(item: LabelledItem, judge: Judge | None = None) -> str:
    """The first stored sample the judge finds correct, else the first gold answer."""
    judge = judge or SubstringJudge()
    correct = (s for s in item.samples if s.strip() and judge.is_correct(s, item.answers))
    return next(correct, item.answers[0]).strip()


def sft_examples(
    tokenizer: Any,
    labelled: Sequence[LabelledItem],
    abstention: str,
    known: Literal["sample", "gold"] = "sample",
    judge: Judge | None = None,
) -> list[tuple[list[int], int]]:
    """Token ids of prompt + target and where the target starts (loss only on the target)."""
    judge = judge or SubstringJudge()
    examples = []
    for item in labelled:
        if item.label is Label.DROPPED:
            continue
        if item.label is Label.UNKNOWN:
            target = abstention
        else:
            target = known_target(item, judge) if known == "sample" else item.answers[0]
        prompt = question_prompt(tokenizer, item.question)
        if getattr(tokenizer, "chat_template", None):
            messages = [*question_messages(item.question), {"role": "assistant", "content": target}]
            full = str(tokenizer.apply_chat_template(messages, tokenize=False))
        else:
            full = f"{prompt} {target}{tokenizer.eos_token or ''}"
        if not full.startswith(prompt):
            full = prompt + full[len(prompt) :]
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        examples.append((list(full_ids), len(prompt_ids)))
    return examples


def sft_batch(
    batch: Sequence[tuple[list[int], int]], pad: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, labels)`` of right-padded ``(ids, target_start)``
    examples, built on ``device``; labels are -100 (no loss) on prompts and padding."""
    import torch

    from amortized.steering.capture import pad_batch

    input_ids, mask = pad_batch([ids for ids, _ in batch], pad, side="right", device=device)
    starts = torch.tensor([start for _, start in batch], device=device)
    columns = torch.arange(input_ids.shape[1], device=device)
    target = (columns[None, :] >= starts[:, None]) & mask.bool()
    return input_ids, mask, input_ids.masked_fill(~target, -100)


def train_sft(
    model: Any,
    tokenizer: Any,
    labelled: Sequence[LabelledItem],
    config: SFTConfig | None = None,
    *,
    progress: bool = False,
) -> SFTResult:
    """Fine-tune every parameter of ``model`` in place, where it is and in its dtype (load
    it with :func:`~amortized.steering.placement.load_model`'s ``device`` and ``dtype``);
    returns the wall time and losses."""
    import torch

    from amortized.steering.capture import model_device

    config = config or SFTConfig()
    started = time.perf_counter()
    examples = sft_examples(tokenizer, labelled, config.abstention, config.known_target)
    if not examples:
        raise ValueError("no known or unknown questions to fine-tune on")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model_device(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    rng = random.Random(config.seed)
    model.train()
    losses: list[float] = []
    steps = config.epochs * -(-len(examples) // config.batch_size)
    bar = tqdm(total=steps, desc="SFT", disable=not progress, file=sys.stderr)
    for _ in range(config.epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            batch = [examples[i] for i in order[start : start + config.batch_size]]
            input_ids, mask, labels = sft_batch(batch, pad, device)
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            bar.update(1)
    bar.close()
    model.eval()
    return SFTResult(time.perf_counter() - started, len(examples), losses)
