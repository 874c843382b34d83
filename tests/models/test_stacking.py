"""Growing a deep model from a shallow one by repeating its layers."""

import pytest
import torch

from amortized.models.shape import ModelShape
from amortized.models.tokenizer import train_tokenizer
from amortized.models.training import grow_by_stacking


def test_stacked_model_repeats_the_small_layers_and_shares_embeddings() -> None:
    tokenizer = train_tokenizer(["a b c d e f g"] * 20, 300)
    small = ModelShape(num_layers=2).new_model(tokenizer, seed=1)
    large = ModelShape(num_layers=6).new_model(tokenizer, seed=2)
    grow_by_stacking(small, large)
    for index, layer in enumerate(large.model.layers):
        source = small.model.layers[index % 2]
        for (name, got), want in zip(
            layer.state_dict().items(), source.state_dict().values(), strict=True
        ):
            assert torch.equal(got, want), f"layer {index} {name}"
    assert torch.equal(large.model.embed_tokens.weight, small.model.embed_tokens.weight)
    assert torch.equal(large.model.norm.weight, small.model.norm.weight)
    assert torch.equal(large.lm_head.weight, small.lm_head.weight)


def test_stacking_needs_matching_widths() -> None:
    tokenizer = train_tokenizer(["a b c d e f g"] * 20, 300)
    small = ModelShape(num_layers=1, hidden_size=128).new_model(tokenizer, seed=1)
    large = ModelShape(num_layers=2, hidden_size=256, num_heads=4).new_model(tokenizer, seed=1)
    with pytest.raises(RuntimeError, match="size mismatch"):
        grow_by_stacking(small, large)
