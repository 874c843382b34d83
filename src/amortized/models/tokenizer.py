"""Byte-level BPE tokenizers trained from text, with a ChatML chat template.

Byte-level BPE never meets an unknown character, so any prompt a user sends (JSON, code,
other scripts) round-trips through the tokenizer even when it was trained on English only.
"""

from collections.abc import Iterable
from importlib.resources import files

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

END_OF_TEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (END_OF_TEXT, IM_START, IM_END)
"""Control tokens: never produced by text, hidden from decoded output."""

MARKUP_TOKENS = (
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
)
"""Single tokens that stay visible in output, so reasoning and tool parsers can find them."""


def chat_template() -> str:
    """The ChatML-style template (system/user/assistant/tool, tools, reasoning) every model uses."""
    return files("amortized.models").joinpath("chat_template.jinja").read_text(encoding="utf-8")


def token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    """The id of a single ``token`` (transformers' lookup also accepts lists, hence this)."""
    found = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(found, int):
        raise KeyError(token)
    return found


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, *, split_digits: bool = False
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for transformers and vLLM.

    ``split_digits`` makes every digit its own token, as Qwen2 and Llama 2 do, so numbers
    cost as many tokens as they would with those models' vocabularies.
    """
    if vocab_size < 300:
        raise ValueError(f"vocab_size={vocab_size} is too small; byte-level BPE needs at least 300")
    bpe = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if split_digits
        else byte_level
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    bpe.add_tokens(list(MARKUP_TOKENS))
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe,
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        bos_token=None,
        unk_token=None,
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = chat_template()
    return tokenizer
