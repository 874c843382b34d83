"""A CASAL-trained change as a LoRA adapter, so one vLLM server (``--enable-lora``) offers the
base model and the abstaining one side by side, chosen per request by model name.

CASAL changes one or two projections of one layer's MLP; the difference ``W_casal - W_base``
is factorised by truncated SVD into the PEFT layout vLLM loads (``lora_A`` [r, in], ``lora_B``
[out, r], ``lora_alpha = r`` so vLLM's scale is 1). The rank is the smallest one vLLM accepts
whose relative reconstruction error stays within a tolerance, unless given.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from amortized.errors import AmortizedError
from amortized.steering.export import casal_provenance

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The ranks vLLM's ``--max-lora-rank`` accepts; an adapter's rank is rounded up to one."""
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PROJECTION = re.compile(r"^(?P<prefix>.*\.mlp\.(?P<module>\w+_proj))\.(?P<kind>weight|bias)$")


class LoraExportError(AmortizedError):
    """A CASAL checkpoint that cannot become an adapter; the message says why."""


@dataclass(frozen=True)
class LoraAdapter:
    """What :func:`write_lora_adapter` wrote."""

    path: Path
    rank: int
    relative_error: dict[str, float]
    """Per trained tensor: ``||dW - B A||_F / ||dW||_F`` at the chosen rank."""
    error_by_rank: dict[str, dict[int, float]]
    """The same error at every rank vLLM accepts (up to full rank): what a smaller rank costs."""
    target_modules: tuple[str, ...]
    layer: int


def _load_tensors(folder: Path, names: list[str]) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    found: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as handle:
            for name in names:
                if name in handle.keys():  # noqa: SIM118 (safe_open has no __contains__)
                    found[name] = handle.get_tensor(name)
    missing = sorted(set(names) - set(found))
    if missing:
        raise LoraExportError(f"{folder} has no tensor(s) {', '.join(missing)}")
    return found


def relative_error(delta: torch.Tensor, rank: int) -> float:
    """Frobenius error of the best rank-``rank`` approximation, relative to ``delta``."""
    return _tail_error(torch.linalg.svdvals(delta.double()), rank)


def errors_by_rank(delta: torch.Tensor) -> dict[int, float]:
    """:func:`relative_error` at every rank vLLM accepts up to ``delta``'s full rank, from
    one singular-value decomposition (each takes seconds for a large model's projection)."""
    singular = torch.linalg.svdvals(delta.double())
    return {k: _tail_error(singular, k) for k in VLLM_LORA_RANKS if k <= min(delta.shape)}


def _tail_error(singular: torch.Tensor, rank: int) -> float:
    total = float(singular.square().sum())
    if total == 0.0:
        return 0.0
    return float((singular[rank:].square().sum() / total).sqrt())


def factorise(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A [rank, in], B [out, rank])`` with ``B @ A`` the best rank-``rank`` fit of ``delta``."""
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (root[:, None] * vh[:rank]).float(), (u[:, :rank] * root[None, :]).float()


def choose_rank(deltas: list[torch.Tensor], tolerance: float) -> int:
    """The smallest rank vLLM accepts that keeps every delta's relative error <= tolerance
    (a rank at or above a delta's full rank is exact: the extra rows are zero)."""
    return _smallest_rank([errors_by_rank(d) for d in deltas], tolerance)


def _smallest_rank(errors: list[dict[int, float]], tolerance: float) -> int:
    for rank in VLLM_LORA_RANKS:
        if all(e.get(rank, 0.0) <= tolerance for e in errors):  # absent: at or above full
            return rank
    return VLLM_LORA_RANKS[-1]


def write_lora_adapter(
    base: str | os.PathLike[str],
    casal: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    rank: int | None = None,
    tolerance: float = 0.05,
    overwrite: bool = False,
) -> LoraAdapter:
    """Write the PEFT adapter of ``casal``'s change to ``base`` into ``out``."""
    from safetensors.torch import save_file

    base_dir, casal_dir, out_dir = Path(base), Path(casal), Path(out)
    record = casal_provenance(casal_dir)
    if record is None:
        raise LoraExportError(f"{casal_dir} is not a CASAL checkpoint (no amortized_casal record)")
    if rank is not None and rank not in VLLM_LORA_RANKS:
        raise LoraExportError(f"--rank {rank}: vLLM accepts {', '.join(map(str, VLLM_LORA_RANKS))}")
    if not 0 < tolerance < 1:
        raise LoraExportError(f"--tolerance must be between 0 and 1, not {tolerance}")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise LoraExportError(
            f"{out_dir} exists and is not empty; pass --overwrite or pick another"
        )
    names = [str(n) for n in record.get("tensors", [])]
    parsed = {name: _PROJECTION.match(name) for name in names}
    if not names or any(m is None for m in parsed.values()):
        raise LoraExportError(f"{casal_dir}: trained tensors {names} are not MLP projections")
    before, after = _load_tensors(base_dir, names), _load_tensors(casal_dir, names)
    deltas: dict[str, torch.Tensor] = {}
    for name in names:
        if before[name].shape != after[name].shape:
            raise LoraExportError(
                f"{name} differs in shape: {casal_dir} was not trained on {base_dir}"
            )
        delta = after[name].float() - before[name].float()
        match = parsed[name]
        assert match is not None
        if match["kind"] == "bias":
            if bool(delta.abs().max() > 0):
                raise LoraExportError(f"{name} changed: a LoRA adapter cannot carry a bias change")
            continue
        deltas[name] = delta
    by_rank = {name: errors_by_rank(delta) for name, delta in deltas.items()}
    chosen = rank if rank is not None else _smallest_rank(list(by_rank.values()), tolerance)
    weights: dict[str, torch.Tensor] = {}
    errors: dict[str, float] = {}
    modules = []
    for name, delta in deltas.items():
        match = parsed[name]
        assert match is not None
        r = min(chosen, min(delta.shape))
        a, b = factorise(delta, r)
        if r < chosen:  # pad to the adapter's rank: zero rows/columns add nothing
            a = torch.cat([a, a.new_zeros(chosen - r, a.shape[1])])
            b = torch.cat([b, b.new_zeros(b.shape[0], chosen - r)], dim=1)
        prefix = f"base_model.model.{match['prefix']}"
        weights[f"{prefix}.lora_A.weight"] = a.contiguous()
        weights[f"{prefix}.lora_B.weight"] = b.contiguous()
        errors[name] = by_rank[name][r] if r < min(delta.shape) else 0.0
        modules.append(match["module"])
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    save_file(weights, str(out_dir / ADAPTER_WEIGHTS))
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(base_dir),
        "r": chosen,
        "lora_alpha": chosen,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": sorted(set(modules)),
        "layers_to_transform": [int(record["layer"])],
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "amortized_casal": {**record, "lora_relative_error": errors},
    }
    (out_dir / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return LoraAdapter(
        out_dir, chosen, errors, by_rank, tuple(sorted(set(modules))), int(record["layer"])
    )
