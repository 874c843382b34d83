"""Quality of a predicted cache, measured the way serving uses it: the prompt's K/V for all
positions but the last come from the predictor, and the base computes everything after that
(the last prompt token, then the continuation) attending to them.

Free of vLLM: transformers' cache holds the predicted K/V, so held-out perplexity and
answers to in-context questions can be compared between the exact cache, the predicted one,
the auxiliary model alone and any other model, on the same tokens.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from amortized.kv_prediction.config import PredictorError
from amortized.kv_prediction.runtime import KVPredictionRuntime


@dataclass(frozen=True)
class NLL:
    """Summed negative log-likelihood over ``tokens`` scored tokens (nats)."""

    total: float
    tokens: int

    def __add__(self, other: "NLL") -> "NLL":
        return NLL(self.total + other.total, self.tokens + other.tokens)

    @property
    def perplexity(self) -> float:
        return float(torch.exp(torch.tensor(self.total / max(1, self.tokens))))


def _check_split(token_ids: Sequence[int], split: int) -> None:
    if not 2 <= split < len(token_ids):
        raise PredictorError(f"split {split} must leave a prompt of >= 2 and a continuation")


def predicted_prefix_cache(runtime: KVPredictionRuntime, token_ids: Sequence[int]) -> Any:
    """A transformers cache holding predicted (post-RoPE) K/V for ``token_ids``."""
    from transformers import DynamicCache

    predicted = runtime.predict(list(token_ids), 0, len(token_ids))
    cache = DynamicCache()
    for layer, (keys, values) in enumerate(zip(predicted.keys, predicted.values, strict=True)):
        # [T, heads, dim] -> [1, heads, T, dim], as transformers' attention stores them.
        cache.update(keys.transpose(0, 1).unsqueeze(0), values.transpose(0, 1).unsqueeze(0), layer)
    return cache


@torch.inference_mode()
def exact_prefix_cache(model: Any, token_ids: Sequence[int]) -> Any:
    """The model's own cache for ``token_ids``."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(token_ids)], device=device)
    return model(input_ids=ids, use_cache=True).past_key_values


@torch.inference_mode()
def continuation_nll(
    model: Any, token_ids: Sequence[int], split: int, prefix_cache: Any | None = None
) -> NLL:
    """NLL of ``token_ids[split:]``. With ``prefix_cache`` (K/V of ``token_ids[:split-1]``)
    the model computes only from the last prompt token on, as a predicted request is
    served; without it, the whole sequence is computed (the model alone)."""
    _check_split(token_ids, split)
    device = next(model.parameters()).device
    if prefix_cache is None:
        ids = torch.tensor([list(token_ids)], device=device)
        logits = model(input_ids=ids, use_cache=False).logits[0, split - 1 : -1]
    else:
        ids = torch.tensor([list(token_ids[split - 1 :])], device=device)
        logits = model(input_ids=ids, past_key_values=prefix_cache, use_cache=True).logits[0, :-1]
    targets = torch.tensor(list(token_ids[split:]), device=device)
    loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
    return NLL(float(loss), len(targets))


@torch.inference_mode()
def greedy_continuation(
    model: Any,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    prefix_cache: Any | None = None,
    stop_ids: Sequence[int] = (),
) -> list[int]:
    """Greedy tokens after ``prompt_ids``; with ``prefix_cache`` (K/V of all prompt tokens
    but the last) the model starts from the last prompt token, as vLLM does with KVP."""
    device = next(model.parameters()).device
    if prefix_cache is None:
        step = torch.tensor([list(prompt_ids)], device=device)
        cache = None
    else:
        step = torch.tensor([[prompt_ids[-1]]], device=device)
        cache = prefix_cache
    generated: list[int] = []
    for _ in range(max_new_tokens):
        out = model(input_ids=step, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        token = int(out.logits[0, -1].argmax())
        if token in stop_ids:
            break
        generated.append(token)
        step = torch.tensor([[token]], device=device)
    return generated
