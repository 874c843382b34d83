"""Serialization golden tests on hand-made tables (reference: MachineLearningLM's eval code)."""

import hashlib
import math

import pandas as pd
import pytest

from amortized.tabular.encoding import (
    LabelCoding,
    column_order,
    encode_rows,
    fit_columns,
    sample_demonstrations,
)
from amortized.tabular.prompt import (
    answer_regex,
    demonstration_lines,
    query_lines,
    raw_prompt,
    user_prompt,
)

# The reference pipeline's raw prompt for a 2-feature, 3-shot, 2-test-row table (seed 40),
# produced by running the official scripts with their pinned requirements.
GOLDEN = (
    "You are an AI assistant. Your task is supervised classification.\n\n[Data]\n"
    "• Each sample = 2 features + 1 label.  Label set = [0, 1].  \n"
    '• Features in a row are comma-separated.  Features and label are separated by "|".\n\n\n'
    "[Training set]  (order of rows does NOT matter)  \n3 rows:  \n"
    "469,477|0\n397,393|0\n632,629|1\n\n"
    "[Test set]  (keep original order!)  \n"
    "Each row = ID, then N features (ID is NOT a feature).  \n2 rows:  \n"
    "ID 0:533,561\nID 1:433,431\n\n"
    "[Output requirements]\nReturn **only** a JSON array.\n"
    'Each element: {"id": <ID>, "label": <predicted_label>}\n\n'
    "Begin when ready. Do not output anything except the JSON array.\n"
)


def prompt_for(train, labels, test, seed=40):
    stats = fit_columns(train)
    order = column_order(len(stats), seed)
    demos = demonstration_lines(encode_rows(train, stats, order), labels)
    tests = query_lines(encode_rows(test, stats, order))
    return raw_prompt(user_prompt(len(order), sorted(set(labels)), demos, tests))


def test_golden_prompt_is_byte_identical() -> None:
    text = prompt_for([[33, 410], [25, 300], [51, 610]], [0, 0, 1], [[40, 520], [29, 350]])
    assert text == GOLDEN
    assert hashlib.sha256(text.encode()).hexdigest().startswith("ed0186a3")


def test_numeric_encoding_uses_sample_std_and_clips_at_zero() -> None:
    stats = fit_columns([[0.0], [10.0]])
    assert stats[0].mean == 5.0
    assert math.isclose(stats[0].std, math.sqrt(50))  # ddof=1
    z = (-1000.0 - 5.0) / math.sqrt(50)
    assert encode_rows([[-1000.0]], stats, [0]) == ["0"]  # clipped from below
    assert encode_rows([[5.0]], stats, [0]) == ["500"]
    assert encode_rows([[1e300]], stats, [0]) == [str(1000 * 120 + 500)]  # z clipped
    assert z < 0


def test_missing_and_infinite_values_become_the_mean() -> None:
    stats = fit_columns([[1.0], [3.0], [None]])
    assert stats[0].mean == 2.0
    for value in (None, float("nan"), float("inf"), "", "n/a"):
        assert encode_rows([[value]], stats, [0]) == ["500"]


def test_text_columns_pass_through_with_separators_replaced() -> None:
    stats = fit_columns([["red, dark"], ["blue|x"]])
    assert not stats[0].numeric
    assert encode_rows([["red, dark"], ["new\nline"], ["unseen"]], stats, [0]) == [
        "red  dark",
        "new line",
        "unseen",
    ]


def test_mixed_column_is_numeric_and_imputes_text() -> None:
    stats = fit_columns([["1"], ["3"], ["oops"]])
    assert stats[0].numeric
    assert encode_rows([["oops"]], stats, [0]) == ["500"]


def test_label_recoding_sorted_and_errors() -> None:
    coding = LabelCoding.fit(["yes", "no", "maybe", "no"])
    assert coding.classes == ("maybe", "no", "yes")
    assert coding.encode(["no", "yes"]) == [1, 2]
    assert LabelCoding.fit([10, 2, 1]).classes == (1, 2, 10)
    with pytest.raises(ValueError, match="one class"):
        LabelCoding.fit(["a", "a"])
    with pytest.raises(ValueError, match="missing"):
        LabelCoding.fit(["a", None, "b"])


def test_column_shuffle_and_demo_sampling_match_the_reference_rngs() -> None:
    assert column_order(5, 40) == [2, 1, 4, 0, 3]
    assert column_order(5, 41) == [1, 4, 0, 2, 3]
    frame = pd.DataFrame({"a": range(30)})
    expected = frame.sample(n=8, random_state=42 + 3).sample(frac=1, random_state=41)
    assert sample_demonstrations(30, 8, 45, 41) == list(expected.index)
    assert sorted(sample_demonstrations(5, 8, 42, 40)) == [0, 1, 2, 3, 4]


def test_answer_regex_allows_multi_digit_labels() -> None:
    import re

    pattern = re.compile(answer_regex(2, [0, 1, 12]))
    assert pattern.fullmatch('[{"id": 0, "label": 12}, {"id": 1, "label": 1}]')
    assert not pattern.fullmatch('[{"id": 0, "label": 3}, {"id": 1, "label": 1}]')
