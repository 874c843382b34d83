"""General ability checks: a model compared with itself changes nothing; a damaged layer
shows in perplexity and answers; new refusals are counted."""

import torch

from amortized.models import ModelFolder
from amortized.steering.general_ability import (
    GeneralAbility,
    compare_ability,
    general_ability,
    text_perplexity,
)
from amortized.steering.placement import load_model

TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 6,
    "Python lists keep their order and can hold items of any type. " * 5,
    "x",
]


def test_self_comparison_is_unchanged_and_damage_shows(tiny_llama: ModelFolder):
    model, tokenizer = load_model(tiny_llama.path, device="cpu", dtype="float32")
    prompts = ["What is 2 plus 2?", "Name a colour.", "Say hello."]
    base = general_ability(model, tokenizer, TEXTS, prompts, max_new_tokens=6)
    again = general_ability(model, tokenizer, TEXTS, prompts, max_new_tokens=6)
    same = compare_ability(base, again)
    assert same["perplexity_change_relative"] == 0.0
    assert same["same_answers"] == 1.0
    assert base.tokens > 40  # the one-token text is skipped
    with torch.no_grad():
        weight = model.get_parameter("model.layers.1.mlp.down_proj.weight")
        weight.add_(torch.randn_like(weight, generator=torch.Generator().manual_seed(0)) * 0.5)
    damaged = general_ability(model, tokenizer, TEXTS, prompts, max_new_tokens=6)
    assert compare_ability(base, damaged)["perplexity_change_relative"] != 0.0
    perplexity, _ = text_perplexity(model, tokenizer, TEXTS[:1], max_windows=1)
    assert perplexity > 1.0


def test_new_refusals_count_only_where_the_base_answered():
    base = GeneralAbility(10.0, 100, ("Paris.", "I don't know.", "Blue."))
    steered = GeneralAbility(10.3, 100, ("I don't know.", "I don't know.", "Blue."))
    result = compare_ability(base, steered)
    assert abs(result["perplexity_change_relative"] - 0.03) < 1e-9
    assert result["new_refusals"] == 1 / 3
    assert result["same_answers"] == 2 / 3
