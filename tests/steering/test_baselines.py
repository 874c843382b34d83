"""The paper's fine-tuning baselines: LoRA SFT and DPO train only adapters, merge them back,
and move the model toward the preferred replies."""

import pytest
import torch

from amortized.models import ModelFolder
from amortized.steering.labelling import Label, LabelledItem
from amortized.steering.placement import load_model
from amortized.steering.sft import (
    DPOConfig,
    SFTConfig,
    _reply_logprobs,
    dpo_pairs,
    train_dpo,
    train_sft,
)

ABSTAIN = "I don't know."


def items() -> list[LabelledItem]:
    """Four known and four unknown questions; unknown ones carry a sampled hallucination."""
    out = []
    for i in range(8):
        known = i % 2 == 0
        out.append(
            LabelledItem(
                id=str(i),
                question=f"What is the capital of country number {i}?",
                answers=("Paris",),
                label=Label.KNOWN if known else Label.UNKNOWN,
                correct=10 if known else 0,
                wrong=0 if known else 10,
                abstained=0,
                samples=("It is Paris.",) if known else (ABSTAIN, "It is Quxville."),
            )
        )
    return out


def test_dpo_pairs_prefer_the_answer_when_known_and_abstention_when_not(tiny_llama: ModelFolder):
    _, tokenizer = load_model(tiny_llama.path, device="cpu", dtype="float32")
    labelled = items()
    labelled.append(
        LabelledItem("x", "Unanswerable?", ("Paris",), Label.UNKNOWN, 0, 2, 2, (ABSTAIN,))
    )
    pairs = dpo_pairs(tokenizer, labelled, ABSTAIN)
    assert len(pairs) == 8  # the unknown question with no hallucinated sample is skipped
    (good, start), (bad, _) = pairs[0]
    assert "Paris" in tokenizer.decode(good[start:])
    assert "know" in tokenizer.decode(bad[start:])
    (good, start), (bad, _) = pairs[1]
    assert "know" in tokenizer.decode(good[start:])
    assert "Quxville" in tokenizer.decode(bad[start:])


def test_lora_sft_trains_adapters_only_and_merges_them(tiny_llama: ModelFolder):
    model, tokenizer = load_model(tiny_llama.path, device="cpu", dtype="float32")
    names = [n for n, _ in model.named_parameters()]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = SFTConfig(method="lora", epochs=4, batch_size=4, lr=5e-3, lora_rank=4)
    result = train_sft(model, tokenizer, items(), config)
    assert result.losses[-1] < result.losses[0]
    total = sum(p.numel() for p in model.parameters())
    assert 0 < result.trainable_parameters < total / 5
    assert result.tokens > 0
    assert [n for n, _ in model.named_parameters()] == names  # merged: no adapter left
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any("q_proj" in n for n in changed)
    assert any("down_proj" in n for n in changed)
    assert not any("embed" in n or "norm" in n for n in changed)


@pytest.mark.slow
def test_dpo_raises_the_preferred_reply_over_the_rejected_one(tiny_llama: ModelFolder):
    model, tokenizer = load_model(tiny_llama.path, device="cpu", dtype="float32")
    pairs = dpo_pairs(tokenizer, items(), ABSTAIN)
    pad = tokenizer.pad_token_id or 0

    def margin() -> float:
        with torch.no_grad():
            chosen = _reply_logprobs(model, [p[0] for p in pairs], pad)
            rejected = _reply_logprobs(model, [p[1] for p in pairs], pad)
        return float((chosen - rejected).mean())

    start = margin()
    result = train_dpo(model, tokenizer, items(), DPOConfig(epochs=6, batch_size=4, lr=5e-3))
    assert result.examples == 8
    assert result.losses[-1] < result.losses[0]
    assert margin() > start + 1.0
