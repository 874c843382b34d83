"""Chat-template pieces cut from real tokenizers, and session settings merging."""

from typing import Any

import pytest
from pydantic import ValidationError

from amortized.models import ModelFolder
from amortized.models.tokenizer import IM_END
from amortized.serving.listening import ChatFrame, SessionConfig, ThinkingSchedule
from amortized.serving.routes.realtime.serving import merged_config


@pytest.fixture(scope="module")
def tokenizer(tiny_llama: ModelFolder) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama.path)


def test_frame_pieces_rebuild_the_template_rendering(tokenizer: Any) -> None:
    frame = ChatFrame.from_tokenizer(tokenizer, instructions="Be brief.")
    user, answer, again = "Hi there", "Hello!", "Bye"
    ids = [
        *frame.first_user_open,
        *tokenizer.encode(user, add_special_tokens=False),
        *frame.user_close,
        *tokenizer.encode(answer, add_special_tokens=False),
        *frame.answer_close([]),
        *tokenizer.encode(again, add_special_tokens=False),
        *frame.user_close,
    ]
    rendered = tokenizer.apply_chat_template(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": again},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert tokenizer.decode(ids) == rendered


def test_frame_think_markers_and_stop_tokens(tokenizer: Any) -> None:
    frame = ChatFrame.from_tokenizer(tokenizer)
    assert tokenizer.decode(frame.think_open) == "<think>"
    assert tokenizer.decode(frame.think_close) == "</think>"
    end_of_turn = tokenizer.convert_tokens_to_ids(IM_END)
    assert end_of_turn in frame.stop_token_ids
    # An answer that stopped on the end-of-turn token must not get a second one.
    assert frame.answer_close([5, end_of_turn]) == frame.next_user_open[1:]
    assert frame.answer_close([5, 6]) == frame.next_user_open


def test_frame_rejects_a_template_that_drops_text(tokenizer: Any) -> None:
    from amortized.errors import AmortizedError

    original = tokenizer.chat_template
    tokenizer.chat_template = "{% for m in messages %}{{ m.role }}{% endfor %}"
    try:
        with pytest.raises(AmortizedError, match="does not render plain"):
            ChatFrame.from_tokenizer(tokenizer)
    finally:
        tokenizer.chat_template = original


def test_merged_config_is_one_level_deep_and_validated() -> None:
    config = merged_config(SessionConfig(), {"thinking": {"budget_tokens": 32}})
    assert config.thinking.budget_tokens == 32
    assert config.thinking.chunk_tokens == SessionConfig().thinking.chunk_tokens
    config = merged_config(config, {"thinking": {"schedule": "after_turn"}, "barge_in": "truncate"})
    assert config.thinking.schedule is ThinkingSchedule.AFTER_TURN
    assert config.thinking.budget_tokens == 32
    with pytest.raises(ValidationError):
        merged_config(config, {"thinking": {"budget_tokens": -1}})
    with pytest.raises(ValidationError):
        merged_config(config, {"no_such_setting": 1})
