"""The small causal-LM training loop every locally built model uses (default, benchmarks)."""

import math
import sys
from collections.abc import Callable

import torch
from torch import nn
from tqdm import tqdm


def warmup_cosine_lr(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to ``peak``, then cosine decay to 10% of it at ``total`` steps."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_causal_lm(
    model: nn.Module,
    stream: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    seq_len: int,
    lr_at: Callable[[int], float],
    seed: int,
    desc: str,
    progress: bool = True,
    betas: tuple[float, float] = (0.9, 0.95),
    weight_decay: float = 0.1,
) -> list[float]:
    """Train on random ``seq_len`` windows of a token stream; returns the per-step losses.

    Deterministic for a given seed and thread count, which is what lets built models be
    cached by a fingerprint of their recipe.
    """
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=lr_at(0), betas=betas, weight_decay=weight_decay
    )
    generator = torch.Generator().manual_seed(seed)
    span = seq_len + 1
    losses: list[float] = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, file=sys.stderr)
    for step in bar:
        starts = torch.randint(0, len(stream) - span, (batch_size,), generator=generator)
        batch = torch.stack([stream[s : s + span] for s in starts.tolist()])
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def grow_by_stacking(small: nn.Module, large: nn.Module) -> None:
    """Initialise ``large`` from ``small`` by repeating its layers (G_stack, arXiv 2405.15319).

    Layer ``i`` of ``large`` gets layer ``i % n`` of the ``n``-layer ``small``; embeddings,
    final norm and head are copied. Circuits a shallow model learns in a minute (copying
    needs two layers) then seed the deep one, whose own training would sit on a long
    plateau first. Both models must share width, heads and vocabulary.
    """
    small_inner, large_inner = getattr(small, "model", small), getattr(large, "model", large)
    small_layers, large_layers = small_inner.layers, large_inner.layers
    if not isinstance(small_layers, nn.ModuleList) or not isinstance(large_layers, nn.ModuleList):
        raise TypeError("both models need decoder layers at .model.layers")
    for name, module in small.named_children():
        if name != getattr(small, "base_model_prefix", "model"):
            getattr(large, name).load_state_dict(module.state_dict())
    for name, module in small_inner.named_children():
        if name != "layers":
            getattr(large_inner, name).load_state_dict(module.state_dict())
    for index, layer in enumerate(large_layers):
        layer.load_state_dict(small_layers[index % len(small_layers)].state_dict())
