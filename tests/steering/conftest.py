"""Tiny random models of the families ``amortized.models`` cannot build (its ``ModelShape``
knows Llama and Qwen2 only): Qwen3, Mistral, Gemma, Gemma 2 and Gemma 3 text, saved as model
folders with the tiny Llama's tokenizer, so steering is tested on each family's real
transformers decoder layer."""

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    MistralConfig,
    PretrainedConfig,
    Qwen3Config,
)

from amortized.models import ModelFolder

NEW_FAMILIES = ("qwen3", "mistral", "gemma", "gemma2", "gemma3_text")
"""``config.model_type`` of each family built here."""


def tiny_config(family: str, tokenizer: Any) -> PretrainedConfig:
    """Hidden 64, 2 layers, 4 heads of 16, 2 KV heads (GQA); Gemma 2/3 with a short sliding
    window, Gemma 3 with one sliding and one full-attention layer. Weights 5x the usual
    0.02 spread, so the last prompt token's state differs enough between questions for
    CASAL to separate known from unknown in a few dozen steps."""
    pad = getattr(tokenizer, "pad_token_id", 0)
    common: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 512,
        "pad_token_id": pad,
        "bos_token_id": pad,
        "eos_token_id": getattr(tokenizer, "eos_token_id", 0),
        "initializer_range": 0.1,
    }
    gemma_attention: dict[str, Any] = {"query_pre_attn_scalar": 16, "sliding_window": 8}
    configs = {
        "qwen3": lambda: Qwen3Config(**common),
        "mistral": lambda: MistralConfig(**common),
        "gemma": lambda: GemmaConfig(**common),
        "gemma2": lambda: Gemma2Config(**common, **gemma_attention),
        "gemma3_text": lambda: Gemma3TextConfig(
            **common, **gemma_attention, layer_types=["sliding_attention", "full_attention"]
        ),
    }
    config: PretrainedConfig = configs[family]()
    return config


def build_family(family: str, tokenizer: Any, out: Path, seed: int = 0) -> Path:
    """A random ``family`` model folder at ``out``, stored in bfloat16 like real checkpoints.
    Norm weights get noise around their init (1, or 0 for Gemma's ``1 + w``): all equal,
    they would hide a norm applied in the wrong place."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, tokenizer))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.3 * torch.randn_like(param))
    model.to(torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_families(
    tiny_llama: ModelFolder, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Model folder of each of :data:`NEW_FAMILIES` (built in about a second)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama.path)
    root = tmp_path_factory.mktemp("families")
    return {
        family: build_family(family, tokenizer, root / family, seed)
        for seed, family in enumerate(NEW_FAMILIES)
    }
