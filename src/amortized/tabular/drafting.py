"""Speculative drafts that know the answer layout, for vLLM's ``custom_class`` proposer.

A 50-row answer is ``[{"id": 0, "label": 2}, {"id": 1, "label": 0}, ...]``: everything but
the labels is known in advance. vLLM's n-gram (prompt-lookup) drafts copy the previous row,
so they break at every id (``16`` is copied where ``17`` comes) and again at the label:
about 2.5 decode steps per row. :class:`AnswerLayoutProposer` repeats the model's previous
row token for token with the next id written in, and guesses the previous row's label, so a
step ends only at a label the guess got wrong: about one step per row. Anything else (other
requests, text off the layout) gets n-gram drafts.

Serve with ``--speculative-config`` set to :func:`speculative_config`'s JSON::

    {"method": "custom_class", "num_speculative_tokens": 12,
     "model": "amortized.tabular.drafting.AnswerLayoutProposer"}

The drafting logic (:func:`layout_continuation`, :class:`LayoutDrafter`) is plain Python
with no vLLM import, so it is tested on its own; only the class vLLM loads touches vLLM.
"""

import itertools
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from amortized.tabular.prompt import answer_element

ROW = re.compile(r'\{"id": (\d+), "label": (\d+)\}')
TAIL_TOKENS = 64
"""Output tokens read per step to find the last two complete rows (a row is ~14 tokens)."""
ROWS_AHEAD = 3
"""Rows of expected text drafted from (the draft is cut to ``k`` tokens anyway)."""
NGRAM_MIN, NGRAM_MAX = 2, 8
DRAFT_TOKENS = 12
"""A row is ~13 tokens; a step should reach the next label, where a guess may fail."""


def speculative_config(draft_tokens: int = DRAFT_TOKENS) -> str:
    """vLLM's ``--speculative-config`` value that loads :class:`AnswerLayoutProposer`."""
    return json.dumps(
        {
            "method": "custom_class",
            "model": f"{__name__}.AnswerLayoutProposer",
            "num_speculative_tokens": draft_tokens,
        }
    )


def layout_continuation(tail_text: str, rows_ahead: int = ROWS_AHEAD) -> str | None:
    """The text that most likely follows ``tail_text`` in an answer array, or None.

    Found from the last complete ``{"id": N, "label": L}`` in the tail: the next rows are
    ``N+1, N+2, ...``, each guessed to repeat the latest label. None when the tail does not
    continue that layout (not an answer, or text the model wrote differently).
    """
    rows = list(ROW.finditer(tail_text))
    if not rows:
        return None
    last = rows[-1]
    row_id, label = int(last.group(1)), last.group(2)
    written = tail_text[last.end() :]
    opening = f', {{"id": {row_id + 1}, "label": '
    if opening.startswith(written):
        head = opening[len(written) :] + label + "}"
    elif written.startswith(opening) and written[len(opening) :].isdigit():
        label, head = written[len(opening) :], "}"
    else:
        return None
    ahead = "".join(
        ", " + answer_element(row_id + step, label) for step in range(2, rows_ahead + 1)
    )
    return head + ahead


class LayoutDrafter:
    """Drafts from the answer layout when a request's output follows it, else ``None``.

    The draft repeats the model's latest row token for token, with the next id: a model
    that writes ``" "`` then ``'"'`` where its tokenizer has ``' "'`` keeps doing so, and a
    draft in the tokenizer's own spelling would miss there on every row. Until two rows
    are written (or when the spellings do not line up), the expected text is encoded
    instead (:func:`layout_continuation`).
    """

    def __init__(
        self,
        decode: Callable[[Sequence[int]], str],
        encode: Callable[[str], list[int]],
        k: int,
    ) -> None:
        self._decode = decode
        self._encode = encode
        self.k = k
        self._anchor = encode("0")[-1]
        self._anchor_text = decode([self._anchor])
        self._pieces: dict[int, str] = {}
        self._numbers: dict[int, list[int] | None] = {}

    def draft(self, token_ids: np.ndarray) -> list[int] | None:
        """Up to ``k`` draft tokens continuing ``token_ids`` (prompt and output so far)."""
        tail = token_ids[-TAIL_TOKENS:].tolist()
        pieces = [self._piece(token) for token in tail]
        text = "".join(pieces)
        copied = self._copy_last_row(tail, pieces, text)
        if copied is not None:
            return copied
        continuation = layout_continuation(text)
        if not continuation:
            return None
        return self._encode(continuation)[: self.k]

    def _piece(self, token: int) -> str:
        """The text ``token`` adds after other text (decoded alone, some tokenizers drop a
        leading space)."""
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._decode([self._anchor, token])[len(self._anchor_text) :]
            self._pieces[token] = piece
        return piece

    def _number(self, value: int) -> list[int] | None:
        """Tokens of ``value`` written on its own, or None if they do not spell it."""
        if value not in self._numbers:
            tokens = self._encode(str(value))
            spelled = "".join(self._piece(t) for t in tokens) == str(value)
            self._numbers[value] = tokens if spelled else None
        return self._numbers[value]

    def _copy_last_row(self, tail: list[int], pieces: list[str], text: str) -> list[int] | None:
        rows = list(ROW.finditer(text))
        if len(rows) < 2:
            return None
        before, last = rows[-2], rows[-1]
        offsets = itertools.accumulate(map(len, pieces), initial=0)
        token_at = {offset: index for index, offset in enumerate(offsets)}
        spans = (before.end(2), last.start(1), last.end(1), last.start(2), last.end(2))
        if not all(offset in token_at for offset in spans):
            return None
        start, id_start, id_end, label_start, end = (token_at[offset] for offset in spans)
        head, middle = tail[start:id_start], tail[id_end:label_start]
        label = tail[label_start:end]
        row_id = int(last.group(1))

        def opening(row: int) -> list[int] | None:
            """Tokens from after one label up to the next label: ``}, {"id": row, "label": ``."""
            digits = self._number(row)
            return None if digits is None else head + digits + middle

        written = tail[end:]
        upcoming = opening(row_id + 1)
        if upcoming is None:
            return None
        if written == upcoming[: len(written)]:
            draft = upcoming[len(written) :] + label
        elif (
            written[: len(upcoming)] == upcoming
            and "".join(pieces[end + len(upcoming) :]).isdigit()
        ):
            label, draft = written[len(upcoming) :], []
        else:
            return None
        row = row_id + 2
        while len(draft) < self.k:
            following = opening(row)
            if following is None:
                break
            draft += following + label
            row += 1
        return draft[: self.k]


class AnswerLayoutProposer:
    """vLLM ``custom_class`` proposer: layout drafts for tabular answers, n-gram otherwise."""

    def __init__(self, vllm_config: Any) -> None:
        from vllm.tokenizers import cached_tokenizer_from_config
        from vllm.v1.spec_decode.ngram_proposer import (
            _find_longest_matched_ngram_and_propose_tokens,
        )

        spec = vllm_config.speculative_config
        self.k = int(spec.num_speculative_tokens)
        self.max_model_len = int(vllm_config.model_config.max_model_len)
        tokenizer = cached_tokenizer_from_config(vllm_config.model_config)
        self.layout = LayoutDrafter(
            decode=lambda ids: str(tokenizer.decode(ids)),
            encode=lambda text: list(tokenizer.encode(text, add_special_tokens=False)),
            k=self.k,
        )
        self._ngram_draft = _find_longest_matched_ngram_and_propose_tokens

    def propose(
        self,
        sampled_token_ids: list[list[int]],
        num_tokens_no_spec: np.ndarray,
        token_ids_cpu: np.ndarray,
        slot_mappings: Any = None,
    ) -> list[list[int]]:
        """One draft per request in the batch (empty: no speculation for it this step)."""
        drafts: list[list[int]] = []
        for index, sampled in enumerate(sampled_token_ids):
            length = int(num_tokens_no_spec[index])
            room = min(self.k, self.max_model_len - length - 1)
            if not sampled or room <= 0:
                drafts.append([])
                continue
            history = token_ids_cpu[index, :length]
            layout = self.layout.draft(history)
            if layout is not None:
                drafts.append(layout[:room])
                continue
            found = self._ngram_draft(history, NGRAM_MIN, NGRAM_MAX, self.max_model_len, room)
            drafts.append([int(t) for t in found])
        return drafts

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to load: the drafts come from the layout and the context."""
