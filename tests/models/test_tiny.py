import json
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from amortized.models import ModelFolder, TinyModelSpec, build_tiny_model
from amortized.models.folder import MANIFEST_NAME
from amortized.models.shape import ModelShape


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2"])
def test_tiny_model_loads_with_transformers_and_uses_gqa(fixture, request):
    folder: ModelFolder = request.getfixturevalue(fixture)
    config = AutoConfig.from_pretrained(folder.path)
    assert config.num_key_value_heads < config.num_attention_heads
    tokenizer = AutoTokenizer.from_pretrained(folder.path)
    model = AutoModelForCausalLM.from_pretrained(folder.path)
    ids: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    logits = model(**ids).logits
    assert logits.shape[-1] == config.vocab_size
    assert torch.isfinite(logits).all()


def test_architectures_match_the_requested_shape(tiny_llama, tiny_qwen2):
    assert tiny_llama.architectures == ("LlamaForCausalLM",)
    assert tiny_qwen2.architectures == ("Qwen2ForCausalLM",)


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    a = build_tiny_model(tmp_path / "a", TinyModelSpec(seed=3))
    b = build_tiny_model(tmp_path / "b", TinyModelSpec(seed=3))
    c = build_tiny_model(tmp_path / "c", TinyModelSpec(seed=4))
    digest = lambda f: json.loads((f.path / MANIFEST_NAME).read_text())["files"][  # noqa: E731
        "model.safetensors"
    ]["sha256"]
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


def test_invalid_shape_is_rejected():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        ModelShape(num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="CPU attention"):
        ModelShape(hidden_size=64, num_heads=4, num_kv_heads=2)
