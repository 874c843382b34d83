"""Predicted K/V against transformers' own KV cache."""

import pytest
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


def test_predicted_prefix_scores_like_serving(
    tiny_llama: ModelFolder, identity_predictor: PredictorFolder, trained_predictor: PredictorFolder
):
    """Identity maps give the exact cache, so the continuation scores exactly; a trained
    (approximate) predictor moves it; the model alone scores the same tokens."""
    from amortized.kv_prediction.evaluation import (
        continuation_nll,
        exact_prefix_cache,
        greedy_continuation,
        predicted_prefix_cache,
    )

    base = load_hf_model(tiny_llama.path, torch.float32)
    config = base_config_of(tiny_llama.path)
    ids = [(7 * i) % 480 + 10 for i in range(90)]
    split = 60
    alone = continuation_nll(base, ids, split)
    exact = continuation_nll(base, ids, split, exact_prefix_cache(base, ids[: split - 1]))
    identity = KVPredictionRuntime(identity_predictor.path, config)
    via_identity = continuation_nll(
        base, ids, split, predicted_prefix_cache(identity, ids[: split - 1])
    )
    trained = KVPredictionRuntime(trained_predictor.path, config)
    via_trained = continuation_nll(
        base, ids, split, predicted_prefix_cache(trained, ids[: split - 1])
    )
    assert alone.tokens == exact.tokens == via_identity.tokens == 30
    assert exact.total == pytest.approx(alone.total, abs=1e-3)
    assert via_identity.total == pytest.approx(exact.total, abs=1e-3)
    assert via_trained.total != exact.total
    # The random tiny model barely attends, so look at the logits themselves.
    suffix = torch.tensor([ids[split - 1 :]])

    def logits(cache: object) -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = base(input_ids=suffix, past_key_values=cache).logits
        return out

    reference = logits(exact_prefix_cache(base, ids[: split - 1]))
    moved = logits(predicted_prefix_cache(trained, ids[: split - 1])) - reference
    same = logits(predicted_prefix_cache(identity, ids[: split - 1])) - reference
    assert float(same.abs().max()) < 1e-4
    assert float(moved.abs().max()) > 10 * max(float(same.abs().max()), 1e-5)
    assert (exact + via_identity).tokens == 60
    assert exact.perplexity > 1

    prompt = ids[:split]
    plain = greedy_continuation(base, prompt, 8)
    assert len(plain) == 8
    assert greedy_continuation(base, prompt, 8, predicted_prefix_cache(identity, prompt[:-1])) == (
        plain
    )
