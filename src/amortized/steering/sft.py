"""The fine-tuning baselines CASAL is compared with, on the same labelled questions: SFT with
an answer as target for known questions and the abstention phrase for unknown ones, on every
parameter or through LoRA adapters (peft) that are merged back afterwards, and DPO (LoRA)
preferring that target over the opposite behaviour.

The known target is, by default, one of the model's own sampled answers that the judge found
correct (labelling kept them): it teaches when to answer without also teaching a new answer
format, which a bare gold string ("Paris" for a model that says "It is Paris.") would."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tqdm import tqdm

from amortized.steering.judge import Judge, SubstringJudge
from amortized.steering.labelling import Label, LabelledItem
from amortized.steering.qa import DEFAULT_ABSTENTION, question_messages, question_prompt

if TYPE_CHECKING:
    import torch


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Every linear projection of attention and MLP: the usual LoRA SFT setting (the CASAL paper
does not list its adapters' targets; this is our assumption, see docs/steering.md)."""


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
    method: Literal["full", "lora"] = "full"
    """"full": every parameter; "lora": rank-``lora_rank`` adapters on ``lora_targets`` of
    every layer (peft), merged into the weights when training ends."""
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self) -> None:
        if self.known_target not in ("sample", "gold"):
            raise ValueError(f"known_target must be 'sample' or 'gold', not {self.known_target!r}")
        if self.method not in ("full", "lora"):
            raise ValueError(f"method must be 'full' or 'lora', not {self.method!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.lora_rank < 1:
            raise ValueError("epochs, batch_size and lora_rank must be >= 1 and lr > 0")


@dataclass(frozen=True)
class SFTResult:
    wall_seconds: float
    examples: int
    losses: list[float] = field(default_factory=list)
    trainable_parameters: int = 0
    """Parameters the optimizer updated (all of them for full SFT, the adapters for LoRA)."""
    tokens: int = 0
    """Tokens run through the model in training, summed over epochs (for FLOP estimates)."""


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
        examples.append(answered(tokenizer, item.question, target))
    return examples


def answered(tokenizer: Any, question: str, target: str) -> tuple[list[int], int]:
    """Token ids of ``question``'s prompt followed by ``target`` as the reply, and where the
    reply starts."""
    prompt = question_prompt(tokenizer, question)
    if getattr(tokenizer, "chat_template", None):
        messages = [*question_messages(question), {"role": "assistant", "content": target}]
        full = str(tokenizer.apply_chat_template(messages, tokenize=False))
    else:
        full = f"{prompt} {target}{tokenizer.eos_token or ''}"
    if not full.startswith(prompt):
        full = prompt + full[len(prompt) :]
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    return list(full_ids), len(prompt_ids)


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
    """Fine-tune ``model`` in place, where it is and in its dtype (load it with
    :func:`~amortized.steering.placement.load_model`'s ``device`` and ``dtype``): every
    parameter, or LoRA adapters merged back at the end (``config.method``); returns the wall
    time and losses."""

    from amortized.steering.capture import model_device

    config = config or SFTConfig()
    started = time.perf_counter()
    examples = sft_examples(tokenizer, labelled, config.abstention, config.known_target)
    if not examples:
        raise ValueError("no known or unknown questions to fine-tune on")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model_device(model)
    trained = with_lora(model, config) if config.method == "lora" else model

    def step(chunk: list[int]) -> tuple[Any, int]:
        input_ids, mask, labels = sft_batch([examples[i] for i in chunk], pad, device)
        loss = trained(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        return loss, int(mask.sum())

    losses, count, tokens = _optimise(
        trained, len(examples), config, step, f"SFT ({config.method})", progress
    )
    if config.method == "lora":
        trained.merge_and_unload()
    model.eval()
    return SFTResult(time.perf_counter() - started, len(examples), losses, count, tokens)


def _optimise(
    trained: Any,
    size: int,
    config: SFTConfig | DPOConfig,
    step: Callable[[list[int]], tuple[Any, int]],
    desc: str,
    progress: bool,
) -> tuple[list[float], int, int]:
    """The loop SFT and DPO share: AdamW on the trainable parameters over shuffled batches of
    ``size`` examples; ``step`` gives a batch's loss and token count. Returns the losses, the
    number of trained parameters and the tokens seen."""
    import torch

    params = [p for p in trained.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    rng = random.Random(config.seed)
    trained.train()
    losses: list[float] = []
    tokens = 0
    steps = config.epochs * -(-size // config.batch_size)
    bar = tqdm(total=steps, desc=desc, disable=not progress, file=sys.stderr)
    for _ in range(config.epochs):
        order = list(range(size))
        rng.shuffle(order)
        for start in range(0, size, config.batch_size):
            loss, seen = step(order[start : start + config.batch_size])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            tokens += seen
            bar.update(1)
    bar.close()
    return losses, sum(p.numel() for p in params), tokens


def with_lora(model: Any, config: SFTConfig) -> Any:
    """``model`` with trainable LoRA adapters injected in place (peft); the rest frozen."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("LoRA fine-tuning needs peft: pip install 'amortized[sft]'") from error
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in config.lora_targets if t in present]
    if not targets:
        raise ValueError(f"the model has none of the LoRA targets {', '.join(config.lora_targets)}")
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


@dataclass(frozen=True)
class DPOConfig:
    """DPO (arXiv 2305.18290) through LoRA adapters; the reference policy is the base model
    (the adapters switched off), so no second copy of the model is held."""

    epochs: int = 3
    lr: float = 5e-4
    batch_size: int = 8
    beta: float = 0.1
    seed: int = 0
    abstention: str = DEFAULT_ABSTENTION
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.beta <= 0:
            raise ValueError("epochs and batch_size must be >= 1, lr and beta > 0")


Pair = tuple[tuple[list[int], int], tuple[list[int], int]]


def dpo_pairs(
    tokenizer: Any, labelled: Sequence[LabelledItem], abstention: str, judge: Judge | None = None
) -> list[Pair]:
    """``(chosen, rejected)`` per question: for a known one its correct answer over the
    abstention; for an unknown one the abstention over one of its sampled hallucinations
    (an unknown question without a stored wrong, non-abstaining sample is skipped)."""
    judge = judge or SubstringJudge()
    pairs: list[Pair] = []
    for item in labelled:
        if item.label is Label.KNOWN:
            chosen, rejected = known_target(item, judge), abstention
        elif item.label is Label.UNKNOWN:
            wrong = [
                s.strip()
                for s in item.samples
                if s.strip()
                and not judge.is_correct(s, item.answers)
                and not judge.is_abstention(s)
            ]
            if not wrong:
                continue
            chosen, rejected = abstention, wrong[0]
        else:
            continue
        good, bad = (
            answered(tokenizer, item.question, chosen),
            answered(tokenizer, item.question, rejected),
        )
        pairs.append((good, bad))
    return pairs


def _reply_logprobs(model: Any, examples: Sequence[tuple[list[int], int]], pad: int) -> Any:
    """Summed log-probability of each example's reply tokens, [batch]."""
    import torch

    from amortized.steering.capture import model_device

    input_ids, mask, labels = sft_batch(examples, pad, model_device(model))
    logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].float()
    targets = labels[:, 1:]
    picked = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return (picked * (targets != -100)).sum(dim=-1)


def train_dpo(
    model: Any,
    tokenizer: Any,
    labelled: Sequence[LabelledItem],
    config: DPOConfig | None = None,
    *,
    progress: bool = False,
) -> SFTResult:
    """DPO on :func:`dpo_pairs` in place (LoRA adapters, merged at the end)."""
    import torch

    config = config or DPOConfig()
    started = time.perf_counter()
    pairs = dpo_pairs(tokenizer, labelled, config.abstention)
    if not pairs:
        raise ValueError("no preference pairs: need known questions or unknown ones with samples")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lora = SFTConfig(
        method="lora",
        lora_rank=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_targets=config.lora_targets,
    )
    trained = with_lora(model, lora)
    with torch.no_grad(), trained.disable_adapter():  # the reference policy: the base
        trained.eval()
        reference = []
        for i in range(0, len(pairs), config.batch_size):
            batch = pairs[i : i + config.batch_size]
            chosen = _reply_logprobs(trained, [good for good, _ in batch], pad)
            rejected = _reply_logprobs(trained, [bad for _, bad in batch], pad)
            reference.append(torch.stack((chosen, rejected), dim=1))
    reference_of = torch.cat(reference)  # [pairs, 2]: chosen, rejected

    def step(chunk: list[int]) -> tuple[Any, int]:
        chosen = _reply_logprobs(trained, [pairs[i][0] for i in chunk], pad)
        rejected = _reply_logprobs(trained, [pairs[i][1] for i in chunk], pad)
        ref = reference_of[chunk].to(chosen.device)
        margin = (chosen - ref[:, 0]) - (rejected - ref[:, 1])
        loss = -torch.nn.functional.logsigmoid(config.beta * margin).mean()
        return loss, sum(len(pairs[i][0][0]) + len(pairs[i][1][0]) for i in chunk)

    losses, count, tokens = _optimise(trained, len(pairs), config, step, "DPO (lora)", progress)
    trained.merge_and_unload()
    model.eval()
    return SFTResult(time.perf_counter() - started, len(pairs), losses, count, tokens)
