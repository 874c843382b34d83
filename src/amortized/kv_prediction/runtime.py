"""Predict a base model's KV cache for a prompt: auxiliary forward + maps + base RoPE.

Free of vLLM so it can be tested against transformers directly; the connector only
writes what :meth:`KVPredictionRuntime.predict` returns into vLLM's paged cache.
"""

import importlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from amortized.kv_prediction.config import (
    AttentionGeometry,
    PredictorError,
    PredictorFolder,
    check_served_geometry,
    load_predictor_folder,
)
from amortized.kv_prediction.predictor import KVPredictor
from amortized.kv_prediction.projections import run_capture


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Neox-style rotation, as Llama/Qwen2 checkpoints (and vLLM for them) use."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class BaseRotary:
    """The base model's own rotary embedding, so predicted keys are rotated exactly as its own."""

    def __init__(self, config: Any) -> None:
        model_type = str(config.model_type)
        module = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
        classes = [getattr(module, n) for n in dir(module) if n.endswith("RotaryEmbedding")]
        if not classes:
            raise PredictorError(f"transformers has no rotary embedding for {model_type!r}")
        self.rotary: nn.Module = classes[0](config=config)

    def apply(self, keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``keys [..., T, heads, head_dim]`` for ``positions [T]``."""
        cos, sin = self.rotary(keys, positions.unsqueeze(0))
        cos, sin = cos[0].unsqueeze(-2), sin[0].unsqueeze(-2)  # [T, 1, D]
        rotated: torch.Tensor = keys * cos + rotate_half(keys) * sin
        return rotated


@dataclass
class PredictedKV:
    """Per base layer, post-RoPE keys and values ``[num_tokens, kv_heads, head_dim]``."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    start: int

    @property
    def num_tokens(self) -> int:
        """How many positions (from ``start``) were predicted."""
        return int(self.keys[0].shape[0]) if self.keys else 0


def load_hf_model(path: str | os.PathLike[str], dtype: torch.dtype) -> nn.Module:
    """A transformers causal LM in eval mode; imported lazily (transformers is slow to import)."""
    from transformers import AutoModelForCausalLM

    model: nn.Module = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    model.eval()
    return model


class KVPredictionRuntime:
    """Holds the auxiliary model and the maps; predicts K/V for any span of a prompt."""

    def __init__(
        self,
        predictor: PredictorFolder | str | os.PathLike[str],
        base_config: Any,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        self.folder = (
            predictor
            if isinstance(predictor, PredictorFolder)
            else load_predictor_folder(predictor)
        )
        config = self.folder.config
        self.base = config.base.geometry
        served = AttentionGeometry.from_hf_config(base_config.to_dict(), "served model")
        check_served_geometry(self.folder, served, str(getattr(base_config, "_name_or_path", "")))
        self.device = torch.device(device)
        self.dtype = dtype
        self.aux = load_hf_model(self.folder.aux_path, dtype).to(self.device)
        self.maps = KVPredictor(config.aux.geometry, self.base, config.layer_map)
        self.maps.load(self.folder.weights_path)
        self.maps.to(device=self.device, dtype=dtype).eval()
        self.rotary = BaseRotary(base_config)
        self.rotary.rotary.to(self.device)
        self.last_aux_layer = max(config.layer_map)

    @property
    def weight_bytes(self) -> int:
        """Bytes of the auxiliary model and the maps as loaded."""
        params = [*self.aux.parameters(), *self.maps.parameters()]
        return sum(p.numel() * p.element_size() for p in params)

    def predict(self, token_ids: list[int], start: int, end: int) -> PredictedKV:
        """Predict base K/V for positions ``start..end-1``, reading tokens ``0..end-1``."""
        return self.predict_batch([(token_ids, start, end)])[0]

    @torch.inference_mode()
    def predict_batch(self, spans: Sequence[tuple[Sequence[int], int, int]]) -> list[PredictedKV]:
        """:meth:`predict` for several prompts in one auxiliary forward.

        Prompts are right-padded: under causal attention a real token never sees the pads
        after it, so each prompt's K/V equal those of its own unpadded forward.
        """
        for token_ids, start, end in spans:
            if not 0 <= start < end <= len(token_ids):
                raise PredictorError(f"bad span {start}..{end} for {len(token_ids)} tokens")
        if not spans:
            return []
        longest = max(end for _, _, end in spans)
        rows = [[*ids[:end], *([0] * (longest - end))] for ids, _, end in spans]
        ids = torch.tensor(rows, device=self.device)
        aux_k, aux_v = run_capture(self.aux, ids, stop_after_layer=self.last_aux_layer)
        results = []
        for row, (_, start, end) in enumerate(spans):
            keys, values = self.maps(
                [k[row, start:end] for k in aux_k], [v[row, start:end] for v in aux_v]
            )
            shape = (end - start, self.base.num_kv_heads, self.base.head_dim)
            positions = torch.arange(start, end, device=self.device)
            rotated = [self.rotary.apply(k.reshape(shape), positions) for k in keys]
            results.append(PredictedKV(rotated, [v.reshape(shape) for v in values], start))
        return results


def base_config_of(path: str | os.PathLike[str]) -> Any:
    """The transformers config of a model folder."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(Path(path)))
