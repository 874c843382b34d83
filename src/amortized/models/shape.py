"""Model shapes (Llama or Qwen2) and saving them as Hugging Face folders vLLM can serve."""

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from amortized.models.tokenizer import END_OF_TEXT, IM_END, token_id

Architecture = Literal["llama", "qwen2"]
VLLM_CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
"""Head sizes vLLM 0.32's CPU attention backend implements; others fail at the first request."""


@dataclass(frozen=True)
class ModelShape:
    """Sizes of a decoder-only transformer; ``num_kv_heads < num_heads`` gives GQA."""

    architecture: Architecture = "llama"
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.architecture not in ("llama", "qwen2"):
            raise ValueError(f"architecture must be 'llama' or 'qwen2', not {self.architecture!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be a multiple of num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        if self.head_dim not in VLLM_CPU_HEAD_DIMS:
            raise ValueError(
                f"head dim {self.head_dim} (hidden_size / num_heads) is not one vLLM's CPU "
                f"attention supports: {VLLM_CPU_HEAD_DIMS}"
            )

    @property
    def head_dim(self) -> int:
        """Size of one attention head."""
        return self.hidden_size // self.num_heads

    def config(self, tokenizer: PreTrainedTokenizerFast) -> PretrainedConfig:
        """A transformers config for this shape, with token ids taken from ``tokenizer``."""
        eos = token_id(tokenizer, IM_END)
        pad = token_id(tokenizer, END_OF_TEXT)
        common: dict[str, Any] = {
            "vocab_size": len(tokenizer),
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": pad,
            "eos_token_id": eos,
            "pad_token_id": pad,
            "dtype": "bfloat16",
        }
        if self.architecture == "llama":
            return LlamaConfig(**common)
        return Qwen2Config(**common)

    def new_model(self, tokenizer: PreTrainedTokenizerFast, seed: int) -> PreTrainedModel:
        """A randomly initialised model of this shape, the same for the same seed."""
        torch.manual_seed(seed)
        config = self.config(tokenizer)
        model_cls = LlamaForCausalLM if self.architecture == "llama" else Qwen2ForCausalLM
        model: PreTrainedModel = model_cls(config)
        return model


def save_model_folder(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, out: Path, shape: ModelShape
) -> None:
    """Write weights, config, tokenizer and generation defaults in the layout vLLM expects."""
    # bfloat16 is what vLLM's CPU backend computes in anyway; it halves the files.
    model.to(torch.bfloat16)  # type: ignore[arg-type]
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    eos_ids = [
        token_id(tokenizer, IM_END),
        token_id(tokenizer, END_OF_TEXT),
    ]
    generation = {"eos_token_id": eos_ids, "pad_token_id": eos_ids[1], "do_sample": False}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    (out / "amortized-shape.json").write_text(json.dumps(asdict(shape), indent=2) + "\n")
