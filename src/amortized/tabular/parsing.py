"""Reading the model's answer: JSON first, then label-token probabilities, then the majority.

Every row says which path produced it (:class:`Provenance`), so a fallback is never silent.
The logprob fallback walks the label's tokens, so labels with several digits (more than 10
classes) work, which the reference's single-token lookup does not.
"""

import bisect
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from amortized.llm.base import TokenLogprobs


class Provenance(StrEnum):
    PARSED = "parsed"
    """The label came from the model's JSON answer."""
    LOGPROB = "logprob_fallback"
    """The JSON was unusable for this row; the label token's probabilities decided."""
    MAJORITY = "majority_fallback"
    """Nothing usable for this row: the most frequent training class."""


@dataclass(frozen=True)
class RowPrediction:
    """One test row of one prompt: a probability per class code and how it was obtained."""

    probabilities: np.ndarray
    provenance: Provenance


_ROW_PATTERN = re.compile(r'\{\s*"id"\s*:\s*(\d+)\s*,\s*"label"\s*:\s*"?')


def parse_answer(text: str, rows: int, classes: int) -> dict[int, int]:
    """Row id → class code for every well-formed element of the JSON answer.

    Elements are matched by ``id`` when the ids are distinct and in range, else by
    position when the array has exactly ``rows`` elements (the reference's rule).
    """
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end <= start:
        return {}
    try:
        items = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return {}
    if not isinstance(items, list):
        return {}
    ids = [item.get("id") if isinstance(item, dict) else None for item in items]
    by_id = all(isinstance(i, int) and 0 <= i < rows for i in ids) and len(set(ids)) == len(ids)
    if not by_id and len(items) != rows:
        return {}
    labels: dict[int, int] = {}
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        code = _label_code(item.get("label"), classes)
        if code is None:
            continue
        row = ids[position] if by_id else position
        if isinstance(row, int):
            labels[row] = code
    return labels


def _label_code(value: object, classes: int) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        code = value
    elif isinstance(value, float) and value.is_integer():
        code = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        code = int(value.strip())
    else:
        return None
    return code if 0 <= code < classes else None


def label_probabilities(
    text: str, tokens: Sequence[TokenLogprobs], label_codes: Sequence[int], classes: int
) -> dict[int, np.ndarray]:
    """Row id → class probabilities read from the label tokens' top-k logprobs.

    At a label's first token every top-k alternative that spells a label, or the start of
    one, gets its probability. If the sampled token is only the start of longer labels
    (``1`` of ``12``), the next position's alternatives split that mass: a digit continues
    the label, anything else ends it. Mass on a prefix that was not sampled is shared
    equally by the labels it could start (the logprobs say nothing more).
    """
    if not tokens:
        return {}
    offsets = [t.offset for t in tokens]
    names = [str(code) for code in label_codes]
    result: dict[int, np.ndarray] = {}
    for match in _ROW_PATTERN.finditer(text):
        row = int(match.group(1))
        index = _token_at(offsets, match.end())
        if index is None:
            continue
        probabilities = np.zeros(classes)
        already = text[offsets[index] : match.end()]
        for candidate, logprob in tokens[index].top.items():
            if not candidate.startswith(already):
                continue
            digits = candidate[len(already) :].strip().strip('"')
            mass = math.exp(logprob)
            if not digits:
                continue
            sampled = candidate == tokens[index].token
            _spread(probabilities, names, label_codes, digits, mass, tokens, index, sampled)
        total = probabilities.sum()
        if total > 0:
            result[row] = probabilities / total
    return result


def _spread(
    probabilities: np.ndarray,
    names: Sequence[str],
    codes: Sequence[int],
    prefix: str,
    mass: float,
    tokens: Sequence[TokenLogprobs],
    index: int,
    sampled: bool,
) -> None:
    """Give ``mass`` to the labels spelled by ``prefix`` (one step deeper if it was sampled)."""
    exact = [c for n, c in zip(names, codes, strict=True) if n == prefix]
    longer = [
        (n, c) for n, c in zip(names, codes, strict=True) if n.startswith(prefix) and n != prefix
    ]
    if not longer:
        for code in exact:
            probabilities[code] += mass
        return
    if sampled and index + 1 < len(tokens):
        following = tokens[index + 1].top
        continued = 0.0
        for candidate, logprob in following.items():
            digits = candidate.strip().strip('"')
            if digits.isdigit():
                share = mass * math.exp(logprob)
                continued += share
                matches = [c for n, c in longer if n.startswith(prefix + digits)]
                for code in matches:
                    probabilities[code] += share / len(matches)
        for code in exact:
            probabilities[code] += max(mass - continued, 0.0)
        return
    candidates = exact + [c for _, c in longer]
    for code in candidates:
        probabilities[code] += mass / len(candidates)


def _token_at(offsets: Sequence[int], position: int) -> int | None:
    """Index of the token whose text covers ``position`` (None past the end)."""
    index = bisect.bisect_right(offsets, position) - 1
    if index < 0:
        return None
    if index == len(offsets) - 1 and position > offsets[index] + 16:
        return None
    return index


def rows_from_answer(
    text: str,
    tokens: Sequence[TokenLogprobs] | None,
    rows: int,
    label_codes: Sequence[int],
    classes: int,
    majority: int,
) -> list[RowPrediction]:
    """One prediction per test row of a prompt, falling back row by row."""
    parsed = parse_answer(text, rows, classes)
    scored = label_probabilities(text, tokens or (), label_codes, classes)
    predictions = []
    for row in range(rows):
        if row in parsed:
            probabilities = scored.get(row)
            if probabilities is None or int(np.argmax(probabilities)) != parsed[row]:
                probabilities = np.eye(classes)[parsed[row]]
            predictions.append(RowPrediction(probabilities, Provenance.PARSED))
        elif row in scored:
            predictions.append(RowPrediction(scored[row], Provenance.LOGPROB))
        else:
            predictions.append(RowPrediction(np.eye(classes)[majority], Provenance.MAJORITY))
    return predictions
