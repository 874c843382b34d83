"""Where the auxiliary model runs inside an engine: one rank, the KV cache's device and dtype,
and enough device memory next to the KV cache. Pure functions, so the rules are testable
without vLLM or a GPU; the connector applies them at start-up."""

from dataclasses import dataclass

import torch

from amortized.kv_prediction.config import AttentionGeometry, PredictorError

GIB = 1 << 30

AUX_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def check_single_rank(tensor_parallel_size: int, pipeline_parallel_size: int) -> None:
    """Refuse sharded engines: predicted K/V hold every KV head of every layer, and writing
    them into one rank's shard would corrupt the cache (per-rank slicing is not built)."""
    if tensor_parallel_size > 1 or pipeline_parallel_size > 1:
        raise PredictorError(
            "KV prediction runs on one rank only, but the engine has "
            f"tensor_parallel_size={tensor_parallel_size}, "
            f"pipeline_parallel_size={pipeline_parallel_size}; serve with 1 and 1 "
            "(data parallelism is fine) or drop --kv-predictor"
        )


def compute_dtype(model_dtype: torch.dtype, cache_dtype: str, override: str | None) -> torch.dtype:
    """The dtype predictions are computed in: the KV cache's (the model's, as vLLM's ``auto``
    cache is), unless the operator chose one; quantised caches are refused."""
    if cache_dtype not in ("auto", "bfloat16", "float16", "float32"):
        raise PredictorError(
            f"KV prediction writes K/V in the model dtype; --kv-cache-dtype {cache_dtype} is "
            "not supported (use auto)"
        )
    if override is not None:
        if override not in AUX_DTYPES:
            raise PredictorError(
                f"kv_connector_extra_config.aux_dtype must be one of {sorted(AUX_DTYPES)}, "
                f"not {override!r}"
            )
        return AUX_DTYPES[override]
    return AUX_DTYPES.get(cache_dtype, model_dtype)


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes the auxiliary model needs on the engine's device, outside vLLM's budget."""

    weights: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.activations

    def shortfall(self, free: int, total: int, kv_cache: int) -> str | None:
        """Why the device may not hold the KV cache vLLM is about to allocate next to this
        plan, with the ``--gpu-memory-utilization`` that would leave room; None if it fits."""
        if free - kv_cache >= self.total:
            return None
        short = self.total - (free - kv_cache)
        suggested = max(0.05, (total * 0.9 - self.total) / total) if total else 0.0
        return (
            f"the KV predictor needs {self.total / GIB:.2f} GiB on the device (weights "
            f"{self.weights / GIB:.2f}, activations {self.activations / GIB:.2f}) beyond "
            f"vLLM's share, {short / GIB:.2f} GiB more than is free; lower "
            f"--gpu-memory-utilization (e.g. to {suggested:.2f})"
        )


def memory_plan(
    weight_bytes: int,
    aux: AttentionGeometry,
    base: AttentionGeometry,
    max_batch_tokens: int,
    dtype: torch.dtype,
) -> MemoryPlan:
    """Weights as loaded, plus the largest step's activations: the auxiliary model's hidden
    states (a few live at once), its captured K/V and the mapped base K/V for every
    predicted token (vLLM schedules at most ``max_batch_tokens`` of them per step)."""
    size = torch.tensor([], dtype=dtype).element_size()
    per_token = (
        4 * aux.hidden_size  # residual, normed input, attention and MLP outputs
        + 2 * aux.kv_dim * aux.num_layers
        + 2 * base.kv_dim * base.num_layers
    )
    return MemoryPlan(weights=weight_bytes, activations=per_token * max_batch_tokens * size)
