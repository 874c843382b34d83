"""Forward hooks on a transformers model's ``k_proj``/``v_proj``: read them or replace them.

Training and serving both need the pre-RoPE K/V of every layer, and training must make the
base attend to predicted K/V; hooking the projections does both without copying model code.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import torch
from torch import nn

from amortized.kv_prediction.config import PredictorError


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layer list of a ``*ForCausalLM`` or bare ``*Model``."""
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise PredictorError(f"{type(model).__name__} has no decoder layers at .model.layers")
    return layers


def kv_projections(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """``(k_proj, v_proj)`` of every layer."""
    pairs = []
    for index, layer in enumerate(decoder_layers(model)):
        attn = getattr(layer, "self_attn", None)
        k_proj, v_proj = getattr(attn, "k_proj", None), getattr(attn, "v_proj", None)
        if not isinstance(k_proj, nn.Module) or not isinstance(v_proj, nn.Module):
            raise PredictorError(f"layer {index} has no self_attn.k_proj / v_proj")
        pairs.append((k_proj, v_proj))
    return pairs


class StopForward(Exception):
    """Raised from a hook once everything needed has been captured."""


@contextmanager
def capture_kv(
    model: nn.Module, stop_after_layer: int | None = None
) -> Iterator[tuple[list[torch.Tensor | None], list[torch.Tensor | None]]]:
    """Collect each layer's ``k_proj``/``v_proj`` output ``[B, T, kv_dim]``.

    With ``stop_after_layer`` the forward is aborted (:class:`StopForward`) right after that
    layer's V projection: later layers and that layer's attention and MLP are never needed
    to predict a KV cache, which saves a whole layer of the auxiliary model's work.
    """
    pairs = kv_projections(model)
    keys: list[torch.Tensor | None] = [None] * len(pairs)
    values: list[torch.Tensor | None] = [None] * len(pairs)
    handles = []

    def keep(store: list[torch.Tensor | None], index: int, stop: bool) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            store[index] = output
            if stop:
                raise StopForward

        return hook

    for index, (k_proj, v_proj) in enumerate(pairs):
        handles.append(k_proj.register_forward_hook(keep(keys, index, False)))
        handles.append(v_proj.register_forward_hook(keep(values, index, index == stop_after_layer)))
    try:
        yield keys, values
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def replace_kv(
    model: nn.Module, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor]
) -> Iterator[None]:
    """Make every layer attend to the given pre-RoPE K/V instead of its own projections."""
    pairs = kv_projections(model)
    if len(keys) != len(pairs) or len(values) != len(pairs):
        raise PredictorError(f"need K/V for {len(pairs)} layers, got {len(keys)}/{len(values)}")

    def substitute(tensor: torch.Tensor) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
            if output.shape != tensor.shape:
                raise PredictorError(
                    f"predicted K/V has shape {tuple(tensor.shape)}, layer makes "
                    f"{tuple(output.shape)}"
                )
            return tensor.to(output.dtype)

        return hook

    handles = []
    for (k_proj, v_proj), key, value in zip(pairs, keys, values, strict=True):
        handles.append(k_proj.register_forward_hook(substitute(key)))
        handles.append(v_proj.register_forward_hook(substitute(value)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def run_capture(
    model: nn.Module, input_ids: torch.Tensor, stop_after_layer: int | None = None
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Forward ``input_ids`` far enough to capture K/V of layers ``0..stop_after_layer``."""
    inner = getattr(model, "model", model)
    with capture_kv(model, stop_after_layer) as (keys, values), suppress(StopForward):
        inner(input_ids=input_ids, use_cache=False)
    last = len(keys) - 1 if stop_after_layer is None else stop_after_layer
    got_k = [k for k in keys[: last + 1] if k is not None]
    got_v = [v for v in values[: last + 1] if v is not None]
    if len(got_k) != last + 1 or len(got_v) != last + 1:
        raise PredictorError("the model did not run every layer's k_proj/v_proj")
    return got_k, got_v
