"""Predicted K/V against transformers' own KV cache."""

import torch

from amortized.kv_prediction import PredictorFolder
from amortized.kv_prediction.runtime import (
    KVPredictionRuntime,
    base_config_of,
    load_hf_model,
)
from amortized.models import ModelFolder


def reference_cache(model_path, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    model = load_hf_model(model_path, torch.float32)
    with torch.no_grad():
        cache = model(input_ids=torch.tensor([ids]), use_cache=True).past_key_values
    return [
        (layer.keys[0].transpose(0, 1), layer.values[0].transpose(0, 1)) for layer in cache.layers
    ]


def test_identity_predictor_reproduces_the_base_cache(
    tiny_llama: ModelFolder, identity_predictor: PredictorFolder
):
    runtime = KVPredictionRuntime(identity_predictor.path, base_config_of(tiny_llama.path))
    ids = list(range(3, 60))
    predicted = runtime.predict(ids, 10, 56)
    assert predicted.num_tokens == 46
    for layer, (keys, values) in enumerate(reference_cache(tiny_llama.path, ids)):
        torch.testing.assert_close(predicted.keys[layer], keys[10:56], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(predicted.values[layer], values[10:56], rtol=1e-5, atol=1e-5)


def test_trained_predictor_is_close_but_not_exact(
    tiny_llama: ModelFolder, trained_predictor: PredictorFolder
):
    runtime = KVPredictionRuntime(trained_predictor.path, base_config_of(tiny_llama.path))
    ids = list(range(3, 40))
    predicted = runtime.predict(ids, 0, len(ids))
    reference = reference_cache(tiny_llama.path, ids)
    # Layer 0 of a 0.5-pruned auxiliary model is the base's layer 0: keys start exact-ish.
    errors = [
        float((p - r[0]).abs().mean()) for p, r in zip(predicted.keys, reference, strict=True)
    ]
    scale = float(reference[1][0].abs().mean())
    assert errors[1] > 0
    assert errors[1] < scale
