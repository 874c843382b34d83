"""Token pieces a chat template puts around user and assistant turns.

Sessions build their context token by token and only ever append, so every request's
prompt extends the previous one and vLLM's prefix cache reuses its KV. The pieces come
from rendering a sentinel conversation once, which works for any template that renders
plain string contents.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from amortized.errors import AmortizedError

_SENTINELS = ("\x1fUSER-ONE\x1f", "\x1fASSISTANT-ONE\x1f", "\x1fUSER-TWO\x1f")


class TemplateTokenizer(Protocol):
    """The slice of a Hugging Face tokenizer a frame needs."""

    eos_token_id: Any

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def decode(self, token_ids: Any, **kwargs: Any) -> str: ...


@dataclass(frozen=True)
class ChatFrame:
    """Token ids of the template pieces; see :meth:`from_tokenizer`."""

    first_user_open: tuple[int, ...]
    """Everything before the first user message's text (BOS, system prompt, user header)."""
    next_user_open: tuple[int, ...]
    """After an assistant answer: the end of that answer and the next user header."""
    user_close: tuple[int, ...]
    """End of the user message and the assistant header (the generation prompt)."""
    think_open: tuple[int, ...]
    think_close: tuple[int, ...]
    stop_token_ids: tuple[int, ...]
    """Tokens that end an answer (EOS and the template's end-of-turn token)."""

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: TemplateTokenizer,
        *,
        instructions: str | None = None,
        think_open: str = "<think>",
        think_close: str = "</think>",
    ) -> "ChatFrame":
        """Render a sentinel conversation with the tokenizer's chat template and cut it up."""
        user_one, assistant_one, user_two = _SENTINELS
        messages: list[dict[str, str]] = []
        if instructions:
            messages.append({"role": "system", "content": instructions})
        messages += [
            {"role": "user", "content": user_one},
            {"role": "assistant", "content": assistant_one},
            {"role": "user", "content": user_two},
        ]
        try:
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        except Exception as error:  # template errors come in many types
            raise AmortizedError(
                f"the model's chat template cannot be rendered: {error}"
            ) from error
        if not isinstance(text, str) or any(s not in text for s in _SENTINELS):
            raise AmortizedError(
                "the model's chat template does not render plain user/assistant text; "
                "think-while-listening needs one that does"
            )
        head, rest = text.split(user_one, 1)
        _, rest = rest.split(assistant_one, 1)
        between, tail = rest.split(user_two, 1)

        def encode(piece: str) -> tuple[int, ...]:
            return tuple(tokenizer.encode(piece, add_special_tokens=False))

        end_of_turn = encode(between)[:1]
        eos = tokenizer.eos_token_id
        stops = {int(eos)} if isinstance(eos, int) else set()
        stops.update(end_of_turn)
        return cls(
            first_user_open=encode(head),
            next_user_open=encode(between),
            user_close=encode(tail),
            think_open=encode(think_open),
            think_close=encode(think_close),
            stop_token_ids=tuple(sorted(stops)),
        )

    def answer_close(self, answer: Sequence[int]) -> tuple[int, ...]:
        """What follows an answer before the next user turn, minus a stop token it ended on.

        ``next_user_open`` starts with the end-of-turn token; an answer that stopped on it
        already holds it, so the context must not repeat it.
        """
        ended_on_stop = bool(answer) and answer[-1] in self.stop_token_ids
        if ended_on_stop and self.next_user_open and self.next_user_open[0] in self.stop_token_ids:
            return self.next_user_open[1:]
        return self.next_user_open
