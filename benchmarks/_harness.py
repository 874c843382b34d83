"""Shared benchmark plumbing: common flags, medians, a printed table, JSON and PNG output."""

import argparse
import json
import math
import random
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def base_parser(description: str) -> argparse.ArgumentParser:
    """Every benchmark takes ``--quick`` and ``--json PATH`` (and ``--plot PATH``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a reduced run of a few minutes")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="write the plot here (PNG)")
    return parser


def median(values: Sequence[float]) -> float:
    """Median; NaN for no values."""
    return statistics.median(values) if values else float("nan")


def wilson(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if total == 0:
        return (math.nan, math.nan)
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - spread), min(1.0, centre + spread))


def bootstrap_ci(
    columns: Sequence[Sequence[float]],
    statistic: Callable[[list[list[float]]], float],
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """95% percentile bootstrap interval of ``statistic`` over paired samples: the columns
    are resampled with the same indices, so paired comparisons stay paired."""
    size = len(columns[0])
    if size == 0:
        return (math.nan, math.nan)
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        picks = [rng.randrange(size) for _ in range(size)]
        values.append(statistic([[column[i] for i in picks] for column in columns]))
    values = sorted(v for v in values if not math.isnan(v))
    if not values:
        return (math.nan, math.nan)
    return (values[int(0.025 * (len(values) - 1))], values[int(0.975 * (len(values) - 1))])


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned table on stdout."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    """Write ``payload`` when ``--json`` was given."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def add_model_option(parser: argparse.ArgumentParser, default: str) -> None:
    """``--model``: with ``--base-url`` the served model's name; without, the model to serve
    locally, a name from ``amortized models list`` (e.g. smollm2-135m-instruct) or a folder."""
    parser.add_argument(
        "--model",
        help="with --base-url: the served model name; otherwise the model to serve, by name "
        f"(amortized models list) or folder (default: {default})",
    )


def model_folder(model: str, cache_dir: str | None = None) -> Path:
    """A model name (fetched or built first if needed) or a folder, as a folder."""
    from amortized.serving.launcher import resolve_model

    return Path(resolve_model(model, cache_dir).model)


@contextmanager
def served_model(
    model: str, log: Path, *vllm_args: str, max_model_len: int | None = 2048
) -> Iterator[tuple[str, str]]:
    """``amortized serve MODEL`` (prefix-cache blocks of 32) on a free port; yields the root
    URL and the served model name (a model's own name, or the folder's name).

    ``max_model_len=None`` keeps the model's own context length.
    """
    from amortized.models.pretrained import known_model_names
    from amortized.serving.process import ServerProcess, free_port

    name = model if model in known_model_names() else Path(model).name
    port = free_port()
    argv = [sys.executable, "-m", "amortized", "serve", model, "--port", str(port), "--verbose"]
    options = ["--block-size", "32", "--served-model-name", name, *vllm_args]
    if max_model_len is not None:
        options += ["--max-model-len", str(max_model_len)]
    print(f"serving {model} (log: {log})", file=sys.stderr)
    with ServerProcess([*argv, "--", *options], port, log) as server:
        yield server.root_url, name
