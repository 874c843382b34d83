"""Drafts that know the answer layout: the logic alone, then inside a real vLLM engine."""

from collections.abc import Iterator, Sequence

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


def test_drafter_encodes_the_continuation_with_the_model_tokenizer() -> None:
    texts = [
        f'[{{"id": {i}, "label": {i % 3}}}, {{"id": {i + 1}, "label": 0}}]' for i in range(300)
    ]
    tokenizer = train_tokenizer(texts, 400, split_digits=True)

    def decode(ids: Sequence[int]) -> str:
        return str(tokenizer.decode(list(ids)))

    drafter = LayoutDrafter(
        decode=decode,
        encode=lambda text: tokenizer.encode(text, add_special_tokens=False),
        k=6,
    )
    history = np.array(tokenizer.encode("prompt\n" + ROWS), dtype=np.int32)
    draft = drafter.draft(history)
    assert draft is not None
    assert len(draft) == 6
    assert ', {"id": 2, "label": 0}'.startswith(decode(draft))
    assert drafter.draft(np.array(tokenizer.encode("just prose"), dtype=np.int32)) is None


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
