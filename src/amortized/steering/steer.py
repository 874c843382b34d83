"""Inference-time steering (the baseline CASAL amortizes away) and greedy batched answers,
used to evaluate the base, steered and CASAL-trained models on the same prompts."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from amortized.steering.capture import (
    check_layer,
    encode_texts,
    hidden_of,
    model_device,
    pad_batch,
    pad_id,
)
from amortized.steering.qa import question_prompt


@contextmanager
def steering(model: nn.Module, layer: int, vector: torch.Tensor, alpha: float) -> Iterator[None]:
    """Add ``alpha * vector`` to decoder layer ``layer``'s output at every position (prompt
    and generated tokens) while the context is open; the hook is removed on exit, also on an
    exception. Same point as :func:`~amortized.steering.capture.capture` reads."""
    block = check_layer(model, layer)
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    if vector.ndim != 1 or (hidden is not None and vector.shape[0] != hidden):
        raise ValueError(f"steering vector must have shape [{hidden}], not {list(vector.shape)}")
    delta = vector.detach().double() * alpha
    cache: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    def add(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        states = hidden_of(output)
        key = (states.dtype, states.device)
        if key not in cache:
            cache[key] = delta.to(device=states.device, dtype=states.dtype)
        steered = states + cache[key]
        if isinstance(output, tuple):
            return (steered, *output[1:])
        return steered

    handle = block.register_forward_hook(add)
    try:
        yield
    finally:
        handle.remove()


def generate_answers(
    model: nn.Module,
    tokenizer: Any,
    questions: Sequence[str],
    *,
    max_new_tokens: int = 16,
    batch_size: int = 16,
    progress: bool = False,
) -> list[str]:
    """Greedy answers to ``question_prompt(question)``, only the new text, stripped, in the
    order of ``questions``. Prompts are grouped by length (less padding) and left-padded, so
    every row's next token sits at the same column."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if not questions:
        return []
    generate = getattr(model, "generate", None)
    if generate is None:
        raise TypeError(f"{type(model).__name__} cannot generate; pass a *ForCausalLM model")
    encoded = encode_texts(tokenizer, [question_prompt(tokenizer, q) for q in questions])
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    pad = pad_id(tokenizer)
    config: Any = copy.deepcopy(getattr(model, "generation_config", None))
    if config is None:
        raise TypeError(f"{type(model).__name__} has no generation_config")
    config.do_sample = False
    config.num_beams = 1
    config.max_new_tokens = max_new_tokens
    config.temperature = None
    config.top_p = None
    config.top_k = None
    if config.pad_token_id is None:
        config.pad_token_id = pad
    device = model_device(model)
    answers: list[str] = [""] * len(encoded)
    eos = config.eos_token_id
    stops = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    starts: Iterable[int] = range(0, len(order), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="generate", unit="batch")
    for start in starts:
        rows = order[start : start + batch_size]
        input_ids, mask = pad_batch([encoded[i] for i in rows], pad, side="left", device=device)
        with torch.inference_mode():
            out = generate(input_ids=input_ids, attention_mask=mask, generation_config=config)
        new = out[:, input_ids.shape[1] :].cpu()
        for row, ids in zip(rows, new.tolist(), strict=True):
            ends = [k for k, token in enumerate(ids) if token in stops]
            text = tokenizer.decode(ids[: ends[0]] if ends else ids, skip_special_tokens=True)
            answers[row] = str(text).strip()
    return answers
