"""Shared benchmark plumbing: common flags, medians, a printed table, JSON and PNG output."""

import argparse
import json
import statistics
import sys
from collections.abc import Iterator, Sequence
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


@contextmanager
def default_model_server(log: Path, max_model_len: int = 2048) -> Iterator[str]:
    """The tiny default model behind ``amortized serve`` (prefix-cache blocks of 32), served
    as ``default``; yields the server's root URL."""
    from amortized.models.default import ensure_default_model
    from amortized.serving.process import ServerProcess, free_port

    model = ensure_default_model()
    port = free_port()
    argv = [sys.executable, "-m", "amortized", "serve", str(model.path), "--port", str(port)]
    vllm_args = ["--block-size", "32", "--max-model-len", str(max_model_len)]
    vllm_args += ["--served-model-name", "default"]
    with ServerProcess([*argv, "--", *vllm_args], port, log) as server:
        yield server.root_url
