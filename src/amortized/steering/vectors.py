"""Steering vectors: the difference of mean activations between questions a model does not
know and questions it knows, at one layer, and their export as llama.cpp control vectors."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from amortized.errors import AmortizedError

VECTOR_FORMAT = "amortized-steering-vector/1"
_Writer = Callable[[Path], None]


@dataclass(frozen=True)
class SteeringVector:
    """``direction`` is v_unknown = mean(unknown) - mean(known) at decoder layer ``layer``'s
    output (0-based; see :mod:`amortized.steering.capture`); v_known is its negation."""

    layer: int
    direction: torch.Tensor
    known_mean: torch.Tensor
    unknown_mean: torch.Tensor
    known_count: int
    unknown_count: int

    @property
    def unknown(self) -> torch.Tensor:
        """v_unknown: added to push the model towards abstaining."""
        return self.direction

    @property
    def known(self) -> torch.Tensor:
        """v_known = -v_unknown: added to push the model towards answering."""
        return -self.direction

    @property
    def norm(self) -> float:
        return float(self.direction.norm())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """One safetensors file: the three vectors, with layer and counts in its metadata."""
        path = Path(path)
        tensors = {
            "direction": self.direction,
            "known_mean": self.known_mean,
            "unknown_mean": self.unknown_mean,
        }
        metadata = {
            "format": VECTOR_FORMAT,
            "layer": str(self.layer),
            "known_count": str(self.known_count),
            "unknown_count": str(self.unknown_count),
        }
        contiguous = {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}
        _atomic(path, lambda staging: save_file(contiguous, str(staging), metadata=metadata))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SteeringVector:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such steering vector file")
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != VECTOR_FORMAT:
                raise ValueError(f"{path} is not a steering vector ({VECTOR_FORMAT}) file")
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        return cls(
            layer=int(metadata["layer"]),
            direction=tensors["direction"],
            known_mean=tensors["known_mean"],
            unknown_mean=tensors["unknown_mean"],
            known_count=int(metadata["known_count"]),
            unknown_count=int(metadata["unknown_count"]),
        )


def steering_vector(known: torch.Tensor, unknown: torch.Tensor, layer: int) -> SteeringVector:
    """v_unknown = mean(unknown) - mean(known) from [N1, H] and [N2, H] activations."""
    for name, value in (("known", known), ("unknown", unknown)):
        if value.ndim != 2:
            raise ValueError(f"{name} activations must be [N, hidden], not {list(value.shape)}")
        if value.shape[0] == 0:
            raise ValueError(
                f"no {name} questions: a steering vector needs at least one known and one "
                "unknown example"
            )
    if known.shape[1] != unknown.shape[1]:
        raise ValueError(f"hidden sizes differ: known {known.shape[1]}, unknown {unknown.shape[1]}")
    known_mean = known.detach().double().mean(0)
    unknown_mean = unknown.detach().double().mean(0)
    return SteeringVector(
        layer=layer,
        direction=(unknown_mean - known_mean).float().cpu(),
        known_mean=known_mean.float().cpu(),
        unknown_mean=unknown_mean.float().cpu(),
        known_count=int(known.shape[0]),
        unknown_count=int(unknown.shape[0]),
    )


def export_control_vector_gguf(
    vectors: Mapping[int, torch.Tensor],
    path: str | os.PathLike[str],
    *,
    alpha: float = 1.0,
    model_hint: str | None = None,
) -> Path:
    """Write ``alpha * vector`` per layer as a llama.cpp control vector (``--control-vector``).

    Layout as llama.cpp's own ``cvector-generator`` writes it: ``general.architecture =
    "controlvector"``, ``controlvector.model_hint`` (the model's GGUF architecture, e.g.
    ``"llama"``, ``"qwen2"``) and ``controlvector.layer_count`` (int32, the number of
    tensors), and one 1-D float32 tensor ``direction.N`` per layer.

    Numbering: our 0-based layer ``i`` is written as ``direction.{i}``. In llama.cpp the
    loader (``common_control_vector_load_one``) stores ``direction.N`` at row ``N - 1`` of its
    buffer, ``llama_adapter_cvec::apply`` copies row ``il - 1`` into ``tensors[il]`` ("there's
    never a tensor for layer 0"), and every model graph ends 0-based layer ``il`` with
    ``cur = build_cvec(cur, il)``, which adds ``tensors[il]``. So ``direction.N`` is added to
    the output of 0-based layer ``N`` -- the same place our steering hook on layer ``N`` adds
    it -- and layer 0's output cannot be steered (refused here). (``cvector-generator`` names
    the vector measured at layer ``il``'s output ``direction.{il+1}``, so its vectors act one
    layer above where they were measured; we keep the point of application instead.)
    """
    import numpy as np

    try:
        from gguf import GGUFWriter
    except ImportError as error:
        raise AmortizedError(
            "writing llama.cpp control vectors needs the gguf package: pip install gguf"
        ) from error

    if not vectors:
        raise ValueError("no vectors to export")
    width: int | None = None
    arrays: dict[int, np.ndarray] = {}
    for layer, vector in sorted(vectors.items()):
        if layer < 1:
            raise ValueError(
                f"layer {layer}: llama.cpp control vectors cannot steer the output of layer 0 "
                "(its direction.0 is rejected); choose a layer >= 1"
            )
        if vector.ndim != 1:
            raise ValueError(f"layer {layer}: vector must be 1-D, not {list(vector.shape)}")
        if width is not None and vector.shape[0] != width:
            raise ValueError(f"layer {layer}: vector has {vector.shape[0]} values, not {width}")
        width = int(vector.shape[0])
        arrays[layer] = (vector.detach().double().cpu() * alpha).float().numpy()

    def write(staging: Path) -> None:
        writer = GGUFWriter(staging, "controlvector")
        if model_hint is not None:
            writer.add_string("controlvector.model_hint", model_hint)
        writer.add_int32("controlvector.layer_count", len(arrays))
        for layer, array in arrays.items():
            writer.add_tensor(f"direction.{layer}", array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    path = Path(path)
    _atomic(path, write)
    return path


def _atomic(path: Path, write: _Writer) -> None:
    """Write through ``write(staging)`` into a temp file beside ``path``, then rename, so a
    reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    staging = Path(name)
    try:
        write(staging)
        staging.replace(path)
    finally:
        staging.unlink(missing_ok=True)
