"""Drafts that know the answer layout: the logic alone, then inside a real vLLM engine."""

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris

from amortized.models import ModelFolder
from amortized.models.tokenizer import train_tokenizer
from amortized.serving.process import ServerProcess, vllm_metric
from amortized.tabular import OpenAICompatibleBackend, PredictionOptions, TabularPredictor
from amortized.tabular.drafting import LayoutDrafter, layout_continuation, speculative_config
from tests.conftest import API_KEY, amortized_server

ROWS = '[{"id": 0, "label": 2}, {"id": 1, "label": 0}'


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        # after a complete row: the next id, the latest label guessed
        (ROWS, ', {"id": 2, "label": 0}, {"id": 3, "label": 0}, {"id": 4, "label": 0}'),
        # inside the next row's id: the id the model is writing is known
        (ROWS + ', {"id": ', '2, "label": 0}, {"id": 3, "label": 0}, {"id": 4, "label": 0}'),
        # the label was just written: close the row, guess it again
        (ROWS + ', {"id": 2, "label": 1', '}, {"id": 3, "label": 1}, {"id": 4, "label": 1}'),
        # two-digit ids
        ('{"id": 9, "label": 1},', ' {"id": 10, "label": 1}, {"id": 11, "label": 1}, '
         '{"id": 12, "label": 1}'),
    ],
)  # fmt: skip
def test_continuation_follows_the_layout(tail: str, expected: str) -> None:
    assert layout_continuation(tail) == expected


@pytest.mark.parametrize(
    "tail",
    [
        "no answer here",
        '[{"id": 0',  # no complete row yet
        ROWS + ', {"id": 5',  # an id out of order
        ROWS + ',{"id": 2',  # a different spacing
        ROWS + ', {"id": 2, "label": x',
    ],
)
def test_no_continuation_off_the_layout(tail: str) -> None:
    assert layout_continuation(tail) is None


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    texts = [
        f'[{{"id": {i}, "label": {i % 3}}}, {{"id": {i + 1}, "label": 0}}]' for i in range(300)
    ]
    return train_tokenizer(texts, 400, split_digits=True)


def drafter_for(tokenizer: Any, k: int) -> LayoutDrafter:
    return LayoutDrafter(
        decode=lambda ids: str(tokenizer.decode(list(ids))),
        encode=lambda text: tokenizer.encode(text, add_special_tokens=False),
        k=k,
    )


def test_drafter_encodes_the_continuation_with_the_model_tokenizer(tokenizer: Any) -> None:
    drafter = drafter_for(tokenizer, 6)
    history = np.array(tokenizer.encode("prompt\n" + ROWS), dtype=np.int32)
    draft = drafter.draft(history)
    assert draft is not None
    assert len(draft) == 6
    assert ', {"id": 2, "label": 0}'.startswith(tokenizer.decode(draft))
    assert drafter.draft(np.array(tokenizer.encode("just prose"), dtype=np.int32)) is None


def spelled(tokenizer: Any, pieces: Sequence[str]) -> list[int]:
    """Each piece encoded on its own: a spelling the tokenizer itself would not choose."""
    return [t for piece in pieces for t in tokenizer.encode(piece, add_special_tokens=False)]


def odd_row(row: int, label: int) -> list[str]:
    """``}, {"id": row, "label": label`` as a model might write it: space and quote apart."""
    return ["}", ",", " ", "{", '"id": ', *str(row), ",", " ", '"label": ', str(label)]


def test_drafts_repeat_the_models_own_spelling(tokenizer: Any) -> None:
    """A draft in the tokenizer's spelling would miss on every row; the copy does not."""
    answer = ["[", "{", '"id": ', "0", ",", " ", '"label": ', "2"]
    answer += odd_row(1, 0) + odd_row(2, 1)
    history = np.array(spelled(tokenizer, ["prompt\n", *answer]), dtype=np.int32)
    expected = spelled(tokenizer, odd_row(3, 1) + odd_row(4, 1))[:20]
    assert drafter_for(tokenizer, 20).draft(history) == expected
    canonical = tokenizer.encode('}, {"id": 3, "label": 1}, {"id": 4', add_special_tokens=False)
    assert expected != canonical[:20]
    # part of the next row written: the draft goes on from there
    partial = np.concatenate([history, np.array(spelled(tokenizer, odd_row(3, 1)[:5]))])
    assert drafter_for(tokenizer, 8).draft(partial) == expected[len(partial) - len(history) :][:8]


def test_a_label_just_written_becomes_the_guess(tokenizer: Any) -> None:
    answer = ["[", "{", '"id": ', "0", ",", " ", '"label": ', "2", *odd_row(1, 0), *odd_row(2, 2)]
    history = np.array(spelled(tokenizer, answer), dtype=np.int32)
    assert (
        drafter_for(tokenizer, 30).draft(history)
        == spelled(tokenizer, odd_row(3, 2) + odd_row(4, 2))[:30]
    )


@pytest.fixture(scope="module")
def drafting_server(
    tiny_llama: ModelFolder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The session's tiny Llama with the layout proposer as vLLM's speculative decoder."""
    log = tmp_path_factory.mktemp("logs") / "drafting-server.log"
    args = ["--max-model-len", "2048", "--speculative-config", speculative_config()]
    with amortized_server(tiny_llama.path, log, *args) as server:
        yield server


@pytest.mark.server
async def test_layout_drafts_run_inside_the_engine(drafting_server: ServerProcess) -> None:
    X, y = load_iris(return_X_y=True)
    order = np.random.RandomState(1).permutation(len(X))
    X, y = X[order], y[order]
    backend = OpenAICompatibleBackend(drafting_server.base_url, API_KEY)
    options = PredictionOptions(shots=16, rows_per_prompt=20, seeds=(40,), guided="regex")
    try:
        result = await TabularPredictor(backend, options).predict(
            X[:40].tolist(), y[:40].tolist(), X[40:80].tolist()
        )
    finally:
        await backend.close()
    assert [p.value for p in result.provenance] == ["parsed"] * 40
    drafted = vllm_metric(drafting_server.root_url, "vllm:spec_decode_num_draft_tokens_total")
    assert drafted > 0
