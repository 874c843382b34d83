"""Where the auxiliary model runs: one rank, the cache's dtype, memory next to the KV cache,
and a runtime that takes its device and dtype from the caller and batches prompts."""

import subprocess

import pytest
import torch

from amortized.kv_prediction import AttentionGeometry, PredictorError, PredictorFolder
from amortized.kv_prediction.placement import (
    GIB,
    check_single_rank,
    compute_dtype,
    memory_plan,
)
from amortized.kv_prediction.runtime import KVPredictionRuntime, base_config_of
from amortized.models import ModelFolder
from tests.conftest import AMORTIZED


def test_sharded_engines_are_refused_with_the_sizes():
    check_single_rank(1, 1)
    with pytest.raises(PredictorError, match="tensor_parallel_size=2, pipeline_parallel_size=1"):
        check_single_rank(2, 1)
    with pytest.raises(PredictorError, match="pipeline_parallel_size=4"):
        check_single_rank(1, 4)


def test_amortized_serve_refuses_tensor_parallel_before_starting(
    tiny_llama: ModelFolder, identity_predictor: PredictorFolder
):
    command = [*AMORTIZED, "serve", str(tiny_llama.path), "--kv-predictor"]
    command += [str(identity_predictor.path), "--", "--tensor-parallel-size=2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "tensor_parallel_size=2" in lines[0]


def test_predictions_use_the_cache_dtype_unless_told_otherwise():
    assert compute_dtype(torch.bfloat16, "auto", None) is torch.bfloat16
    assert compute_dtype(torch.float16, "auto", None) is torch.float16
    assert compute_dtype(torch.bfloat16, "float32", None) is torch.float32
    assert compute_dtype(torch.bfloat16, "auto", "float32") is torch.float32
    with pytest.raises(PredictorError, match="fp8"):
        compute_dtype(torch.bfloat16, "fp8", None)
    with pytest.raises(PredictorError, match="aux_dtype"):
        compute_dtype(torch.bfloat16, "auto", "int8")


def geometry(layers: int, kv_heads: int, hidden: int) -> AttentionGeometry:
    return AttentionGeometry(
        model_type="llama",
        num_layers=layers,
        num_kv_heads=kv_heads,
        head_dim=128,
        hidden_size=hidden,
        vocab_size=128256,
    )


def test_memory_plan_for_an_8b_base():
    # Llama-3.1-8B with a 0.25-pruned auxiliary model (8 of 32 layers) in bf16: ~2.8e9
    # parameters, 8192 tokens per step.
    plan = memory_plan(
        weight_bytes=2 * 2_800_000_000,
        aux=geometry(8, 8, 4096),
        base=geometry(32, 8, 4096),
        max_batch_tokens=8192,
        dtype=torch.bfloat16,
    )
    per_token = 4 * 4096 + 2 * 1024 * 8 + 2 * 1024 * 32
    assert plan.activations == per_token * 8192 * 2
    assert 5.2 < plan.weights / GIB < 5.3
    assert plan.shortfall(free=40 * GIB, total=80 * GIB, kv_cache=30 * GIB) is None
    message = plan.shortfall(free=36 * GIB, total=80 * GIB, kv_cache=30 * GIB)
    assert message is not None
    assert "--gpu-memory-utilization" in message
    assert "e.g. to 0.82" in message


def test_runtime_takes_an_explicit_device_and_dtype(
    tiny_llama: ModelFolder, trained_predictor: PredictorFolder
):
    config = base_config_of(tiny_llama.path)
    reference = KVPredictionRuntime(trained_predictor.path, config, torch.float32, "cpu")
    runtime = KVPredictionRuntime(
        trained_predictor.path, config, torch.bfloat16, torch.device("cpu")
    )
    assert runtime.device == torch.device("cpu")
    assert {p.dtype for p in runtime.aux.parameters()} == {torch.bfloat16}
    assert runtime.weight_bytes * 2 == reference.weight_bytes
    ids = list(range(3, 50))
    low, high = runtime.predict(ids, 5, 47), reference.predict(ids, 5, 47)
    assert low.keys[0].dtype is torch.bfloat16
    for a, b in zip(low.keys + low.values, high.keys + high.values, strict=True):
        assert a.device.type == "cpu"
        torch.testing.assert_close(a.float(), b, rtol=0.05, atol=0.05)


def test_a_batch_predicts_what_each_prompt_predicts_alone(
    tiny_llama: ModelFolder, trained_predictor: PredictorFolder
):
    runtime = KVPredictionRuntime(trained_predictor.path, base_config_of(tiny_llama.path))
    spans = [(list(range(3, 70)), 0, 66), (list(range(100, 130)), 10, 29), ([7, 8, 9], 0, 2)]
    batched = runtime.predict_batch(spans)
    assert [p.num_tokens for p in batched] == [66, 19, 2]
    for span, together in zip(spans, batched, strict=True):
        alone = runtime.predict(*span)
        for a, b in zip(together.keys + together.values, alone.keys + alone.values, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert runtime.predict_batch([]) == []
    with pytest.raises(PredictorError, match="bad span"):
        runtime.predict_batch([([1, 2, 3], 2, 5)])
