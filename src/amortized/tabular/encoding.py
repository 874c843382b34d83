"""MachineLearningLM's row encoding, reproduced so the released checkpoint sees what it was
trained on.

Numeric columns become integers around 500 (``int(z * 120 + 500)``, floored at 0), with
mean and sample std taken from the demonstration rows of the prompt; text passes through.
Deviations from the reference code, all documented in docs/tabular.md: infinite values
count as missing (the reference would poison the column's statistics), and commas, ``|``
and newlines inside text become spaces (the reference asks users to do this by hand).
"""

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

Cell = str | float | int | bool | None
"""One raw table value as read from CSV, Parquet, JSON or a numpy/pandas array."""

Z_LIMIT = 1000.0
SCALE = 120.0
CENTER = 500.0
STD_FLOOR = 1e-6


def is_missing(value: Cell) -> bool:
    """None, NaN, infinities and empty strings are missing values."""
    if value is None:
        return True
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, str):
        return value.strip() == ""
    return False


def as_number(value: Cell) -> float | None:
    """The value as a finite float, or None (what ``pd.to_numeric(errors="coerce")`` keeps)."""
    if is_missing(value):
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            return None
    return number if math.isfinite(number) else None


def clean_text(value: Cell) -> str:
    """A text cell as it appears in a row: separators the format uses become spaces."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    text = str(value)
    for separator in (",", "|", "\n", "\r"):
        text = text.replace(separator, " ")
    return text


@dataclass(frozen=True)
class ColumnStats:
    """How one column is encoded, learned from the demonstration rows."""

    numeric: bool
    mean: float = 0.0
    std: float = 1.0


@dataclass
class EncodingReport:
    """What the encoder had to repair, so nothing is changed silently."""

    imputed: dict[int, int] = field(default_factory=dict)
    """Column index → cells imputed with the mean (missing, infinite or not a number)."""

    def add(self, column: int) -> None:
        self.imputed[column] = self.imputed.get(column, 0) + 1


def fit_columns(rows: Sequence[Sequence[Cell]]) -> list[ColumnStats]:
    """Per-column statistics from the demonstration rows (numeric if any value parses)."""
    if not rows:
        raise ValueError("no demonstration rows to fit the encoding on")
    stats: list[ColumnStats] = []
    for column in range(len(rows[0])):
        numbers = [n for n in (as_number(row[column]) for row in rows) if n is not None]
        if not numbers:
            stats.append(ColumnStats(numeric=False))
            continue
        mean = float(np.mean(numbers))
        std = float(np.std(numbers, ddof=1)) if len(numbers) > 1 else float("nan")
        if math.isnan(std):
            std = 1.0
        stats.append(ColumnStats(numeric=True, mean=mean, std=max(std, STD_FLOOR)))
    return stats


def encode_cell(value: Cell, stats: ColumnStats) -> tuple[str, bool]:
    """The cell's text in a prompt row, and whether it had to be imputed."""
    if not stats.numeric:
        return clean_text(value), False
    number = as_number(value)
    imputed = number is None
    z = 0.0 if number is None else (number - stats.mean) / stats.std
    z = min(max(z, -Z_LIMIT), Z_LIMIT)
    return str(int(max(z * SCALE + CENTER, 0.0))), imputed


def encode_rows(
    rows: Sequence[Sequence[Cell]],
    stats: Sequence[ColumnStats],
    order: Sequence[int],
    report: EncodingReport | None = None,
) -> list[str]:
    """Each row as ``v1,v2,...`` with its columns in ``order``."""
    lines = []
    for row in rows:
        cells = []
        for column in order:
            text, imputed = encode_cell(row[column], stats[column])
            if imputed and report is not None:
                report.add(column)
            cells.append(text)
        lines.append(",".join(cells))
    return lines


def column_order(columns: int, seed: int) -> list[int]:
    """The reference's per-seed column shuffle (``random.seed(seed); random.shuffle``)."""
    order = list(range(columns))
    random.Random(seed).shuffle(order)
    return order


def sample_demonstrations(rows: int, shots: int, sample_seed: int, order_seed: int) -> list[int]:
    """Indices of the demonstrations for one prompt, in prompt order.

    As in the reference: ``shots`` rows drawn with ``RandomState(sample_seed)`` (all rows
    when there are not more than ``shots``), then reordered with ``RandomState(order_seed)``.
    """
    if shots < rows:
        chosen = np.random.RandomState(sample_seed).permutation(rows)[:shots]
    else:
        chosen = np.arange(rows)
    reorder = np.random.RandomState(order_seed).permutation(len(chosen))
    return [int(i) for i in chosen[reorder]]


@dataclass(frozen=True)
class LabelCoding:
    """Class labels ↔ the integers 0..K-1 the model sees (sorted order, as the reference)."""

    classes: tuple[Cell, ...]

    @classmethod
    def fit(cls, labels: Sequence[Cell]) -> "LabelCoding":
        missing = sum(1 for label in labels if is_missing(label))
        if missing:
            raise ValueError(f"the target has {missing} missing values; drop or fill those rows")
        classes = tuple(sorted(set(labels), key=_sort_key))
        if len(classes) < 2:
            raise ValueError(
                f"the target has only one class ({classes[0]!r} in all {len(labels)} rows); "
                "classification needs at least two"
            )
        return cls(classes)

    def encode(self, labels: Sequence[Cell]) -> list[int]:
        index = {label: i for i, label in enumerate(self.classes)}
        return [index[label] for label in labels]

    def decode(self, code: int) -> Cell:
        return self.classes[code]


def _sort_key(value: Cell) -> tuple[int, float | str]:
    """Numbers in numeric order before strings (the reference sorts one dtype only)."""
    number = as_number(value)
    return (0, number) if number is not None and not isinstance(value, str) else (1, str(value))
