"""CASAL (arXiv 2510.02324): train one MLP submodule of one decoder layer so the layer's own
output already carries the steering, answering known questions and abstaining on unknown ones
with no hook at inference time.

Training runs on cached post-attention residuals (see
:func:`~amortized.steering.capture.capture_mlp_inputs` for why this equals training the
standalone layer): a float32 copy of the layer's MLP block (its norm(s) and ``mlp``, as the
family's :class:`~amortized.steering.capture.MLPLayout` says) maps
``r -> r + post(mlp(pre(r)))`` and learns to hit ``layer_out + alpha * v`` for each question's
type. float32 whatever the model's dtype: Adam's small steps vanish in bf16 rounding.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from amortized.steering.capture import MLPBlock, check_layer, mlp_parts
from amortized.steering.vectors import SteeringVector

Submodule = Literal["down_proj", "up_proj", "both"]

TRAINED_PROJECTIONS: dict[str, tuple[str, ...]] = {
    "down_proj": ("down_proj",),
    "up_proj": ("up_proj",),
    "both": ("up_proj", "down_proj"),
}
"""Which of the SwiGLU MLP's projections each ``submodule`` trains. ``"up_proj"`` trains the
up projection only: the gate (``gate_proj``) stays frozen, so which hidden units fire is the
base model's and only what they write changes; ``"both"`` trains ``up_proj`` and
``down_proj``. Biases of a trained projection (if the model has them) train with it."""


@dataclass(frozen=True)
class CasalConfig:
    layer: int
    alpha: float = 4.0
    submodule: Submodule = "down_proj"
    lr: float = 1e-3
    epochs: int = 3
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.submodule not in TRAINED_PROJECTIONS:
            raise ValueError(
                f"submodule must be one of {', '.join(TRAINED_PROJECTIONS)}, not {self.submodule!r}"
            )
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")


@dataclass(frozen=True)
class CasalResult:
    state: dict[str, torch.Tensor]
    """Trained tensors under their full ``model.state_dict()`` names, in the dtype and on the
    device of the parameters they replace."""
    losses: list[float]
    """Mean training MSE of each epoch."""
    wall_seconds: float
    config: CasalConfig
    initial_loss: float = float("nan")
    """MSE of the untrained layer over all examples (its distance from the targets)."""
    final_loss: float = float("nan")
    """MSE of the trained layer (float32) over all examples."""
    examples: int = 0

    def provenance(self, vector: SteeringVector | None = None) -> dict[str, Any]:
        """What the exported checkpoint's ``config.json`` records about this training."""
        record: dict[str, Any] = {
            "method": "CASAL (arXiv 2510.02324)",
            "layer": self.config.layer,
            "alpha": self.config.alpha,
            "submodule": self.config.submodule,
            "lr": self.config.lr,
            "epochs": self.config.epochs,
            "batch_size": self.config.batch_size,
            "seed": self.config.seed,
            "examples": self.examples,
            "initial_loss": self.initial_loss,
            "final_loss": self.final_loss,
            "wall_seconds": round(self.wall_seconds, 3),
            "tensors": sorted(self.state),
        }
        if vector is not None:
            record["vector_norm"] = vector.norm
            record["vector_layer"] = vector.layer
            record["known_count"] = vector.known_count
            record["unknown_count"] = vector.unknown_count
        return record


def casal_targets(
    resid_mid: torch.Tensor,
    layer_out: torch.Tensor,
    labels: Sequence[bool],
    vector: SteeringVector,
    alpha: float,
) -> torch.Tensor:
    """``layer_out + alpha * v`` per example: v_known (= -v_unknown) where ``labels`` is True
    (the model knows the answer), v_unknown where False. [N, H] float32."""
    if resid_mid.shape != layer_out.shape or layer_out.ndim != 2:
        raise ValueError(
            f"resid_mid {list(resid_mid.shape)} and layer_out {list(layer_out.shape)} must both "
            "be [N, hidden]"
        )
    if len(labels) != layer_out.shape[0]:
        raise ValueError(f"{len(labels)} labels for {layer_out.shape[0]} examples")
    if vector.direction.shape != layer_out.shape[1:]:
        raise ValueError(
            f"vector has {vector.direction.shape[0]} values, activations {layer_out.shape[1]}"
        )
    device = layer_out.device
    signs = [-1.0 if known else 1.0 for known in labels]
    sign = torch.tensor(signs, dtype=torch.float32, device=device)
    direction = vector.direction.detach().to(device=device, dtype=torch.float32)
    return layer_out.float() + alpha * sign[:, None] * direction


def standalone_block(
    model: nn.Module, layer: int, *, dtype: torch.dtype = torch.float32
) -> MLPBlock:
    """A deep copy of ``layer``'s MLP block (norm(s) and MLP), in ``dtype`` on the device of
    the layer's MLP, frozen: what CASAL trains, and what a trained model's layer must match."""
    parts = mlp_parts(model, layer)
    post = copy.deepcopy(parts.post_norm) if parts.post_norm is not None else None
    net = MLPBlock(copy.deepcopy(parts.pre_norm), copy.deepcopy(parts.mlp), post)
    device = next(parts.mlp.parameters()).device
    net.to(device=device, dtype=dtype)
    net.requires_grad_(False)
    return net


def _layer_prefix(model: nn.Module, block: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is block:
            return str(name)
    raise ValueError("decoder layer not found in the model")


def train_casal(
    model: nn.Module,
    layer: int,
    resid_mid: torch.Tensor,
    targets: torch.Tensor,
    config: CasalConfig,
    *,
    progress: bool = False,
) -> CasalResult:
    """Train the chosen MLP projection(s) of ``layer`` (a float32 copy on the layer's device;
    the model is not touched) with Adam on MSE(block(r), target) over shuffled minibatches of
    the cached examples. The result is in the model's dtype, on its device; use
    :func:`apply_casal` to put it into the model."""
    if layer != config.layer:
        raise ValueError(f"layer {layer} differs from config.layer {config.layer}")
    if resid_mid.ndim != 2 or resid_mid.shape != targets.shape:
        raise ValueError(
            f"resid_mid {list(resid_mid.shape)} and targets {list(targets.shape)} must both be "
            "[N, hidden]"
        )
    if resid_mid.shape[0] == 0:
        raise ValueError("no training examples")
    if not (torch.isfinite(resid_mid).all() and torch.isfinite(targets).all()):
        raise ValueError("resid_mid or targets hold NaN or infinite values")
    block = check_layer(model, layer)
    prefix = _layer_prefix(model, block)
    net = standalone_block(model, layer)
    device = next(net.parameters()).device
    trained: dict[str, nn.Parameter] = {}
    for projection in TRAINED_PROJECTIONS[config.submodule]:
        module = getattr(net.mlp, projection, None)
        if not isinstance(module, nn.Linear):
            raise ValueError(f"layer {layer}'s MLP has no {projection} linear layer")
        for kind, param in module.named_parameters():
            param.requires_grad_(True)
            trained[f"{prefix}.mlp.{projection}.{kind}"] = param
    inputs = resid_mid.detach().to(device=device, dtype=torch.float32)
    wanted = targets.detach().to(device=device, dtype=torch.float32)
    original = {name: model.get_parameter(name) for name in trained}

    started = time.perf_counter()
    initial = _full_loss(net, inputs, wanted, config.batch_size)
    optimizer = torch.optim.Adam(list(trained.values()), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    epochs: Iterable[int] = range(config.epochs)
    if progress:
        from tqdm import tqdm

        epochs = tqdm(epochs, desc=f"CASAL layer {layer}", unit="epoch")
    losses: list[float] = []
    count = inputs.shape[0]
    with torch.enable_grad():
        for _ in epochs:
            order = torch.randperm(count, generator=generator).to(device)
            total = 0.0
            for start in range(0, count, config.batch_size):
                batch = order[start : start + config.batch_size]
                loss = nn.functional.mse_loss(net(inputs[batch]), wanted[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            losses.append(total / count)
    final = _full_loss(net, inputs, wanted, config.batch_size)
    state = {
        name: param.detach().to(dtype=original[name].dtype, device=original[name].device).clone()
        for name, param in trained.items()
    }
    return CasalResult(
        state=state,
        losses=losses,
        wall_seconds=time.perf_counter() - started,
        config=config,
        initial_loss=initial,
        final_loss=final,
        examples=count,
    )


def _full_loss(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, size: int) -> float:
    total = 0.0
    with torch.no_grad():
        for start in range(0, inputs.shape[0], size):
            out = net(inputs[start : start + size])
            batch = targets[start : start + size]
            total += float(nn.functional.mse_loss(out, batch, reduction="sum"))
    return total / targets.numel()


def apply_casal(model: nn.Module, result: CasalResult) -> None:
    """Copy the trained tensors into ``model`` in place (cast to each parameter's dtype and
    device), so it can be evaluated without a save and reload."""
    for name, value in result.state.items():
        try:
            param = model.get_parameter(name)
        except AttributeError as error:
            raise ValueError(f"the model has no parameter {name!r}") from error
        if param.shape != value.shape:
            raise ValueError(f"{name}: shape {list(value.shape)} != model's {list(param.shape)}")
        with torch.no_grad():
            param.copy_(value.to(device=param.device, dtype=param.dtype))
