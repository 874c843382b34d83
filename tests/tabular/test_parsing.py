"""The answer parser on malformed outputs, and the logprob and majority fallbacks."""

import math

import numpy as np

from amortized.llm.base import TokenLogprobs, offsets_of
from amortized.tabular.parsing import (
    Provenance,
    parse_answer,
    rows_from_answer,
)


def test_parses_by_id_and_by_position() -> None:
    text = '[{"id": 1, "label": 0}, {"id": 0, "label": 2}]'
    assert parse_answer(text, 2, 3) == {1: 0, 0: 2}
    # duplicate ids, right length: by position
    assert parse_answer('[{"id": 0, "label": 1}, {"id": 0, "label": 2}]', 2, 3) == {0: 1, 1: 2}


def test_malformed_outputs_yield_nothing_or_only_valid_rows() -> None:
    assert parse_answer("", 2, 2) == {}
    assert parse_answer("no json here", 2, 2) == {}
    assert parse_answer('[{"id": 0, "label": 1}, {"id": 1, "lab', 2, 2) == {}
    assert parse_answer('{"id": 0, "label": 1}', 1, 2) == {}
    # wrong length and bad ids: unusable
    assert parse_answer('[{"id": 7, "label": 1}]', 2, 2) == {}
    # labels outside the class range, booleans and text are dropped row by row
    text = '[{"id": 0, "label": 5}, {"id": 1, "label": "1"}, {"id": 2, "label": true}]'
    assert parse_answer(text, 3, 2) == {1: 1}
    assert parse_answer('Sure! [{"id": 0, "label": 1.0}] done', 1, 2) == {0: 1}


def tokens_for(pieces: list[tuple[str, dict[str, float]]]) -> list[TokenLogprobs]:
    offsets = offsets_of([p for p, _ in pieces])
    return [TokenLogprobs(p, o, top) for (p, top), o in zip(pieces, offsets, strict=True)]


def test_logprob_fallback_for_truncated_json() -> None:
    pieces = [
        ('[{"id": 0, "label": ', {}),
        ("1", {"1": math.log(0.7), "0": math.log(0.3)}),
        ('}, {"id": 1, "label": ', {}),
        ("0", {"0": math.log(0.6), "1": math.log(0.4)}),
        ("}, {", {}),
    ]
    text = "".join(p for p, _ in pieces)
    rows = rows_from_answer(text, tokens_for(pieces), 3, [0, 1], 2, majority=1)
    assert [r.provenance for r in rows] == [
        Provenance.LOGPROB,
        Provenance.LOGPROB,
        Provenance.MAJORITY,
    ]
    assert np.allclose(rows[0].probabilities, [0.3, 0.7])
    assert np.allclose(rows[1].probabilities, [0.6, 0.4])
    assert np.allclose(rows[2].probabilities, [0.0, 1.0])


def test_logprob_fallback_reads_multi_digit_labels() -> None:
    # Labels 0..12: the sampled first token "1" may be label 1 or the start of 10, 11, 12.
    pieces = [
        ('[{"id": 0, "label": ', {}),
        ("1", {"1": math.log(0.8), "3": math.log(0.2)}),
        ("2", {"2": math.log(0.5), "}": math.log(0.25), "0": math.log(0.25)}),
        ("}", {}),
    ]
    text = "".join(p for p, _ in pieces)  # truncated: no closing bracket
    (row,) = rows_from_answer(text, tokens_for(pieces), 1, list(range(13)), 13, majority=0)
    assert row.provenance is Provenance.LOGPROB
    p = row.probabilities
    assert np.isclose(p[12], 0.4)
    assert np.isclose(p[10], 0.2)
    assert np.isclose(p[1], 0.2)
    assert np.isclose(p[3], 0.2)
    assert int(np.argmax(p)) == 12


def test_parsed_rows_keep_consistent_probabilities() -> None:
    pieces = [
        ('[{"id": 0, "label": ', {}),
        ("1", {"1": math.log(0.9), "0": math.log(0.1)}),
        ("}]", {}),
    ]
    text = "".join(p for p, _ in pieces)
    (row,) = rows_from_answer(text, tokens_for(pieces), 1, [0, 1], 2, majority=0)
    assert row.provenance is Provenance.PARSED
    assert np.allclose(row.probabilities, [0.1, 0.9])
    (plain,) = rows_from_answer(text, None, 1, [0, 1], 2, majority=0)
    assert np.allclose(plain.probabilities, [0.0, 1.0])
