"""Reading the residual stream of a Hugging Face decoder (Llama, Mistral, Qwen2/3, Gemma
1/2/3 families) at chosen layers and token positions, with forward hooks, so steering vectors
and CASAL targets come from exactly the tensors the steering hook and the trained layer act on.

Layer convention: "layer ``i``" is the 0-based decoder layer ``model.model.layers[i]`` and
its activation is that layer's OUTPUT hidden state (the residual stream after its MLP). In
``output_hidden_states=True`` terms that is ``hidden_states[i + 1]`` -- except for the last
layer, where transformers reports the output after the final norm and we do not.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from amortized.errors import AmortizedError
from amortized.steering.qa import question_prompt


@dataclass(frozen=True)
class MLPLayout:
    """Which of a decoder layer's norms wrap its gate/up/down ``mlp``: the layer's second half
    is ``out = r + post_norm(mlp(pre_norm(r)))`` (no ``post_norm``: ``r + mlp(pre_norm(r))``).
    CASAL trains through exactly this map, so it must match the family's real layer."""

    pre_norm: str
    post_norm: str | None = None


_PRE_NORM_ONLY = MLPLayout("post_attention_layernorm")
# Gemma 2/3 "sandwich" norms: their post_attention_layernorm normalises the attention
# OUTPUT, before its residual add; the MLP has its own norm on each side.
_SANDWICH = MLPLayout("pre_feedforward_layernorm", "post_feedforward_layernorm")

MLP_LAYOUTS: dict[str, MLPLayout] = {
    "llama": _PRE_NORM_ONLY,
    "mistral": _PRE_NORM_ONLY,
    "qwen2": _PRE_NORM_ONLY,
    "qwen3": _PRE_NORM_ONLY,
    "gemma": _PRE_NORM_ONLY,
    "gemma2": _SANDWICH,
    "gemma3_text": _SANDWICH,
}
"""Per ``config.model_type``, how its MLP block is wrapped (read off each family's
``modeling_*.py`` decoder layer). Every family here has ``residual + attn`` then the MLP block
and a gate/up/``down_proj`` MLP; anything else is refused rather than guessed."""

SUPPORTED_MODEL_TYPES = tuple(MLP_LAYOUTS)

Positions = Literal["last"] | Sequence[int]


class UnsupportedModelError(AmortizedError):
    """A model whose layer layout capture, steering and CASAL do not know."""


def layout_for(model_type: object, what: str) -> MLPLayout:
    """The :class:`MLPLayout` of ``model_type`` (a ``config.json`` value, so a model can be
    refused before its weights load), or a one-line :class:`UnsupportedModelError` naming the
    supported types; ``what`` says which model."""
    layout = MLP_LAYOUTS.get(model_type) if isinstance(model_type, str) else None
    if layout is None:
        raise UnsupportedModelError(
            f"activation steering supports model_type {', '.join(SUPPORTED_MODEL_TYPES)}, "
            f"not {model_type!r} ({what})"
        )
    return layout


def mlp_layout(model: nn.Module) -> MLPLayout:
    """The model family's :class:`MLPLayout` (see :func:`layout_for`)."""
    config = getattr(model, "config", None)
    return layout_for(getattr(config, "model_type", None), type(model).__name__)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a supported model (``*ForCausalLM`` or the bare model)."""
    mlp_layout(model)
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise UnsupportedModelError(
            f"{type(model).__name__} has no decoder layers at model.layers or model.model.layers"
        )
    return layers


def check_layer(model: nn.Module, layer: int) -> nn.Module:
    """Decoder layer ``layer`` (0-based), or an IndexError naming the valid range."""
    layers = decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise IndexError(
            f"layer {layer} is out of range: the model has layers 0..{len(layers) - 1}"
        )
    module: nn.Module = layers[layer]
    return module


def model_device(model: nn.Module) -> torch.device:
    """Where input ids go: the embedding's device (the first parameter's if none)."""
    embeddings = getattr(model, "get_input_embeddings", None)
    module = embeddings() if callable(embeddings) else None
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor):
        return weight.device
    return next(model.parameters()).device


def add_special_tokens_for(tokenizer: Any, text: str) -> bool:
    """Whether tokenizing ``text`` should add the tokenizer's special tokens: not when the text
    already starts with its BOS (a chat template wrote it), which would otherwise be doubled."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (isinstance(bos, str) and bos and text.startswith(bos))


def encode_texts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, tokenized one by one with :func:`add_special_tokens_for`: the
    ONE tokenization capture, steering and evaluation share."""
    encoded: list[list[int]] = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=add_special_tokens_for(tokenizer, text))
        encoded.append([int(i) for i in ids["input_ids"]])
        if not encoded[-1]:
            raise ValueError(f"text {text!r} tokenizes to no tokens")
    return encoded


def pad_id(tokenizer: Any) -> int:
    """Id used for padding (never attended to): the pad token, else EOS, else 0."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


def pad_batch(
    ids: Sequence[Sequence[int]],
    pad: int,
    *,
    side: Literal["left", "right"],
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of a batch padded on ``side``, built on ``device`` (the
    model's), so no host-to-device copy per tensor."""
    width = max(len(row) for row in ids)
    rows: list[list[int]] = []
    masks: list[list[int]] = []
    for row in ids:
        fill = width - len(row)
        if side == "left":
            rows.append([pad] * fill + list(row))
            masks.append([0] * fill + [1] * len(row))
        else:
            rows.append([*row, *[pad] * fill])
            masks.append([1] * len(row) + [0] * fill)
    input_ids = torch.tensor(rows, dtype=torch.long, device=device)
    mask = torch.tensor(masks, dtype=torch.long, device=device)
    return input_ids, mask


def hidden_of(output: Any) -> torch.Tensor:
    """The hidden-state tensor of a decoder layer's output (a tensor in transformers 5, the
    first element of a tuple in 4.x)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"unexpected decoder layer output {type(output).__name__}")


class _StopForward(Exception):
    """Raised by the deepest hook: layers above it (and the LM head) need not run."""


@dataclass(frozen=True)
class _Tap:
    module: nn.Module
    before: bool
    """True: read the module's first positional input (a forward pre-hook); False: its output."""


def _resolve_positions(
    positions: Positions, lengths: Sequence[int], device: torch.device
) -> torch.Tensor:
    """Per row, the absolute token indices to read ([B, P], on ``device``); negatives count
    from each row's own end."""
    if isinstance(positions, str):
        if positions != "last":
            raise ValueError(f"positions must be 'last' or a list of indices, not {positions!r}")
        return torch.tensor([[n - 1] for n in lengths], dtype=torch.long, device=device)
    if not positions:
        raise ValueError("positions is empty")
    rows = []
    for n in lengths:
        row = []
        for p in positions:
            index = p + n if p < 0 else p
            if not 0 <= index < n:
                raise IndexError(f"position {p} is outside a prompt of {n} tokens")
            row.append(index)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long, device=device)


def _run_taps(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    taps: Sequence[_Tap],
    positions: Positions,
    *,
    batch_size: int,
    progress: bool,
) -> list[torch.Tensor]:
    """Per tap, the float32 activations at ``positions`` of every text ([N, P, H]), on the
    CPU: only the few read positions leave the model's device, and a whole dataset of them
    (every layer, for a sweep) would otherwise pile up in accelerator memory. float32 holds
    any bf16/fp16 value exactly, so nothing is lost.

    Batches are right-padded: causal attention keeps real tokens from seeing the padding and
    their positions stay 0..n-1, so a batched read equals an unbatched one."""
    if not texts:
        raise ValueError("no texts to capture")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    layers = decoder_layers(model)
    inner = getattr(model, "model", model)
    owners = {id(m): i for i, layer in enumerate(layers) for m in layer.modules()}
    deepest = layers[max(owners[id(tap.module)] for tap in taps)]
    device = model_device(model)
    encoded = encode_texts(tokenizer, texts)
    pad = pad_id(tokenizer)
    results: list[list[torch.Tensor]] = [[] for _ in taps]
    starts = range(0, len(encoded), batch_size)
    for start in _progress(starts, progress, "capture"):
        chunk = encoded[start : start + batch_size]
        index = _resolve_positions(positions, [len(row) for row in chunk], device)
        input_ids, mask = pad_batch(chunk, pad, side="right", device=device)
        found: list[torch.Tensor | None] = [None] * len(taps)
        with ExitStack() as stack:
            for k, tap in enumerate(taps):
                stack.enter_context(_tap_hook(tap, k, index, found))
            stack.enter_context(_stop_after(deepest))
            # no_grad rather than inference_mode: callers may edit or train on the results.
            with torch.no_grad(), suppress(_StopForward):
                inner(input_ids=input_ids, attention_mask=mask, use_cache=False)
        for k, value in enumerate(found):
            if value is None:
                raise RuntimeError("a capture hook did not run; is the tapped module used?")
            results[k].append(value)
    return [torch.cat(parts) for parts in results]


@contextmanager
def _tap_hook(
    tap: _Tap, k: int, index: torch.Tensor, found: list[torch.Tensor | None]
) -> Iterator[None]:
    def gather(hidden: torch.Tensor) -> None:
        rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]
        found[k] = hidden[rows, index.to(hidden.device)].detach().float().cpu()

    def pre(module: nn.Module, args: tuple[Any, ...]) -> None:
        gather(args[0])

    def post(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        gather(hidden_of(output))

    handle = (
        tap.module.register_forward_pre_hook(pre)
        if tap.before
        else tap.module.register_forward_hook(post)
    )
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _stop_after(module: nn.Module) -> Iterator[None]:
    def stop(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        raise _StopForward

    # Registered after the taps, so it runs after the tap on the same module.
    handle = module.register_forward_hook(stop)
    try:
        yield
    finally:
        handle.remove()


def _progress(items: range, enabled: bool, desc: str) -> Iterator[int]:
    if not enabled:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, desc=desc, unit="batch")


def capture(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    layers: Sequence[int],
    *,
    positions: Positions = "last",
    batch_size: int = 16,
    progress: bool = False,
) -> dict[int, torch.Tensor]:
    """Residual stream (decoder layer OUTPUT) of each of ``layers`` for raw ``texts``.

    ``positions="last"`` gives [N, H] at each text's last token; a list of indices gives
    [N, P, H] (negative indices count from each text's end). Layers above the deepest one
    asked for are not run."""
    if not layers:
        raise ValueError("no layers to capture")
    taps = [_Tap(check_layer(model, layer), before=False) for layer in layers]
    values = _run_taps(
        model, tokenizer, texts, taps, positions, batch_size=batch_size, progress=progress
    )
    if positions == "last":
        values = [v[:, 0] for v in values]
    return dict(zip(layers, values, strict=True))


def capture_last_token(
    model: nn.Module,
    tokenizer: Any,
    questions: Sequence[str],
    layers: Sequence[int],
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> dict[int, torch.Tensor]:
    """Per layer, [N, H] float32 outputs at the last token of ``question_prompt(question)``,
    where steering vectors are measured."""
    texts = [question_prompt(tokenizer, q) for q in questions]
    return capture(model, tokenizer, texts, layers, batch_size=batch_size, progress=progress)


def capture_mlp_inputs(
    model: nn.Module,
    tokenizer: Any,
    questions: Sequence[str],
    layer: int,
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(resid_mid, layer_out)``, each [N, H] float32, at the last question token of
    ``layer``: the residual stream after the layer's attention (the input of the norm in
    front of its MLP, see :class:`MLPLayout`) and the layer's output.

    Why this is all CASAL needs: every supported layer computes ``r = h + attn(...)`` then
    ``out = r + post(mlp(pre(r)))``, the second step per token. ``r`` at the last token
    depends only on earlier layers and this layer's attention, all frozen, so training this
    layer's MLP with a loss at that token is exactly training that map on the cached ``r`` --
    the same loss, gradients and result as running the standalone layer, without re-running
    attention every step."""
    block = check_layer(model, layer)
    parts = _mlp_parts(block, mlp_layout(model), layer)
    texts = [question_prompt(tokenizer, q) for q in questions]
    taps = [_Tap(parts.pre_norm, before=True), _Tap(block, before=False)]
    resid_mid, layer_out = _run_taps(
        model, tokenizer, texts, taps, "last", batch_size=batch_size, progress=progress
    )
    return resid_mid[:, 0], layer_out[:, 0]


class MLPBlock(nn.Module):
    """``r -> r + post_norm(mlp(pre_norm(r)))`` (``post_norm`` only for sandwich-norm
    families): the second half of a decoder layer, the map CASAL trains through."""

    def __init__(self, pre_norm: nn.Module, mlp: nn.Module, post_norm: nn.Module | None) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.mlp = mlp
        self.post_norm = post_norm

    def forward(self, resid: torch.Tensor) -> torch.Tensor:
        update: torch.Tensor = self.mlp(self.pre_norm(resid))
        if self.post_norm is not None:
            update = self.post_norm(update)
        return resid + update


@dataclass(frozen=True)
class MLPParts:
    """A decoder layer's own MLP modules, as its family's :class:`MLPLayout` names them."""

    pre_norm: nn.Module
    mlp: nn.Module
    post_norm: nn.Module | None = None


def _mlp_parts(block: nn.Module, layout: MLPLayout, layer: int) -> MLPParts:
    names = [layout.pre_norm, "mlp", *([layout.post_norm] if layout.post_norm else [])]
    found = {name: getattr(block, name, None) for name in names}
    missing = [name for name, module in found.items() if not isinstance(module, nn.Module)]
    if missing:
        raise UnsupportedModelError(
            f"layer {layer} ({type(block).__name__}) has no {' or '.join(missing)}"
        )
    modules = [module for module in found.values() if isinstance(module, nn.Module)]
    return MLPParts(modules[0], modules[1], modules[2] if layout.post_norm else None)


def mlp_parts(model: nn.Module, layer: int) -> MLPParts:
    """The norm(s) and MLP of decoder layer ``layer``: the model's own modules."""
    return _mlp_parts(check_layer(model, layer), mlp_layout(model), layer)


def mlp_block(model: nn.Module, layer: int) -> MLPBlock:
    """The MLP half of ``layer`` built from the model's own modules (shared, not copied):
    the map :func:`capture_mlp_inputs` and CASAL rely on."""
    parts = mlp_parts(model, layer)
    return MLPBlock(parts.pre_norm, parts.mlp, parts.post_norm)
