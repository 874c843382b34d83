"""The learned per-layer linear maps from auxiliary K/V to base K/V (pre-RoPE)."""

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from amortized.kv_prediction.config import AttentionGeometry, PredictorError


class KVPredictor(nn.Module):
    """For each base layer, ``K_base = A_k(K_aux[layer_map[i]])`` and likewise for V.

    Inputs and outputs are merged-head, pre-RoPE projections ``[..., heads * head_dim]``,
    as the paper's reference code does: RoPE (and any k-norm) belongs to the base model.
    """

    def __init__(
        self, aux: AttentionGeometry, base: AttentionGeometry, layer_map: Sequence[int]
    ) -> None:
        super().__init__()
        self.layer_map = list(layer_map)
        self.key_maps = nn.ModuleList(nn.Linear(aux.kv_dim, base.kv_dim) for _ in layer_map)
        self.value_maps = nn.ModuleList(nn.Linear(aux.kv_dim, base.kv_dim) for _ in layer_map)

    def forward(
        self, aux_keys: Sequence[torch.Tensor], aux_values: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Predicted base keys and values, one tensor per base layer."""
        keys = [m(aux_keys[j]) for m, j in zip(self.key_maps, self.layer_map, strict=True)]
        values = [m(aux_values[j]) for m, j in zip(self.value_maps, self.layer_map, strict=True)]
        return keys, values

    def set_identity(self) -> None:
        """Copy the auxiliary K/V unchanged (needs equal widths); the exactness check uses it."""
        with torch.no_grad():
            for linear in [*_linears(self.key_maps), *_linears(self.value_maps)]:
                if linear.in_features != linear.out_features:
                    raise PredictorError(
                        f"identity maps need equal K/V widths, got {linear.in_features} -> "
                        f"{linear.out_features}"
                    )
                linear.weight.copy_(torch.eye(linear.in_features))
                linear.bias.zero_()

    @torch.no_grad()
    def fit_least_squares(
        self,
        aux_keys: Sequence[torch.Tensor],
        aux_values: Sequence[torch.Tensor],
        base_keys: Sequence[torch.Tensor],
        base_values: Sequence[torch.Tensor],
        ridge: float = 1e-3,
    ) -> None:
        """Closed-form ridge fit of every map on ``[N, dim]`` samples: a strong starting point."""
        pairs = [
            (self.key_maps, aux_keys, base_keys),
            (self.value_maps, aux_values, base_values),
        ]
        for maps, aux, base in pairs:
            for linear, j, target in zip(_linears(maps), self.layer_map, base, strict=True):
                x = aux[j].reshape(-1, linear.in_features).double()
                x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
                y = target.reshape(-1, linear.out_features).double()
                gram = x.T @ x
                gram += ridge * torch.eye(len(gram), dtype=gram.dtype) * gram.diagonal().mean()
                solution = torch.linalg.solve(gram, x.T @ y)
                linear.weight.copy_(solution[:-1].T)
                linear.bias.copy_(solution[-1])

    def save(self, path: Path) -> None:
        """Write the maps as safetensors (float32)."""
        tensors = {k: v.detach().float().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(path))

    def load(self, path: Path) -> None:
        """Load maps saved by :meth:`save`; a shape mismatch names the tensor."""
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise PredictorError(f"cannot read predictor weights {path}: {exc}") from exc
        own = self.state_dict()
        missing = sorted(set(own) - set(tensors))
        if missing:
            raise PredictorError(f"{path} lacks tensors {missing[:3]}")
        for name, tensor in tensors.items():
            if name not in own:
                raise PredictorError(f"{path} has an unexpected tensor {name}")
            if tuple(tensor.shape) != tuple(own[name].shape):
                raise PredictorError(
                    f"{path}: {name} has shape {tuple(tensor.shape)}, expected "
                    f"{tuple(own[name].shape)}"
                )
        self.load_state_dict(tensors)


def _linears(maps: nn.ModuleList) -> list[nn.Linear]:
    return [cast(nn.Linear, m) for m in maps]
