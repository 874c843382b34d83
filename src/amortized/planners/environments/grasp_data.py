"""GRASP grids (arXiv 2407.01892): the published benchmark files and a seeded generator.

Both produce the same ``GraspGrid``, so scoring, prompts and tests never care where a grid
came from. The published data is read in place (never copied into the project): its folder
comes from an explicit ``data_dir`` or the ``AMORTIZED_GRASP_DIR`` environment variable.
"""

from __future__ import annotations

import functools
import json
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from amortized.errors import AmortizedError

SIZE = 11
"""Every GRASP grid is 11 x 11."""

DATA_DIR_ENV = "AMORTIZED_GRASP_DIR"
"""Environment variable naming the folder that holds ``grids/`` and ``greedy_results/``."""

START_KINDS = ("inner", "outer")
ENERGY_KINDS = ("random", "upDown", "leftRight", "cluster", "spiral")
OBSTACLE_KINDS = ("free", "block")
CATEGORIES = tuple(
    f"{start}_{energy}_{obstacle}"
    for start in START_KINDS
    for energy in ENERGY_KINDS
    for obstacle in OBSTACLE_KINDS
)
"""The 20 published file stems, e.g. ``inner_cluster_block``."""


class GraspDataError(AmortizedError):
    """The published GRASP data is missing or malformed (says which option to set)."""


@dataclass(frozen=True)
class GraspGrid:
    """One grid as rows of ``'.'``/``'E'``/``'O'``/``'A'`` (A = start, never holds energy)."""

    rows: tuple[str, ...]
    start: tuple[int, int]
    category: str = ""
    """``start_energy_obstacle`` (e.g. ``outer_spiral_free``), for grouping results."""
    index: int = 0
    energy_probability: float = -1.0
    """As published: cell probability (random, upDown, leftRight), block count (cluster), -1."""

    @property
    def energy(self) -> list[tuple[int, int]]:
        return [(r, c) for r, row in enumerate(self.rows) for c, ch in enumerate(row) if ch == "E"]

    @property
    def obstacles(self) -> list[tuple[int, int]]:
        return [(r, c) for r, row in enumerate(self.rows) for c, ch in enumerate(row) if ch == "O"]


def parse_ascii_grid(text: str, start: Sequence[int] | None = None) -> GraspGrid:
    """Read the published ASCII table (column header, ``+---+`` rules, ``r|   | E |`` rows).

    ``start`` (the file's ``[row, col]``) is checked against the ``A`` cell when given.
    """
    rows: list[str] = []
    for line in text.splitlines():
        if "|" not in line:
            continue
        cells = line.split("|")[1:-1]
        row = "".join(cell.strip() or "." for cell in cells)
        if len(row) != len(cells) or any(ch not in ".EOA" for ch in row):
            raise GraspDataError(f"unreadable GRASP grid row {line!r}")
        rows.append(row)
    if len(rows) != SIZE or any(len(row) != SIZE for row in rows):
        raise GraspDataError(f"GRASP grid is not {SIZE}x{SIZE}: {len(rows)} rows")
    found = [(r, c) for r, row in enumerate(rows) for c, ch in enumerate(row) if ch == "A"]
    if len(found) != 1:
        raise GraspDataError(f"GRASP grid has {len(found)} start cells 'A', expected 1")
    if start is not None and tuple(start) != found[0]:
        raise GraspDataError(f"GRASP start {list(start)} disagrees with the 'A' at {found[0]}")
    return GraspGrid(rows=tuple(rows), start=found[0])


def format_ascii_grid(grid: GraspGrid) -> str:
    """The published ASCII table for ``grid`` (inverse of ``parse_ascii_grid``)."""
    rule = "  " + "+---" * SIZE + "+"
    lines = ["    " + "".join(f"{c:<4}" for c in range(SIZE)), rule]
    for r, row in enumerate(grid.rows):
        cells = "".join(f" {' ' if ch == '.' else ch} |" for ch in row)
        lines += [f"{r:>2}|{cells}", rule]
    return "\n".join(lines) + "\n"


# --- published files --------------------------------------------------------------------


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The explicit ``data_dir``, else ``$AMORTIZED_GRASP_DIR``, else ``None`` (generate)."""
    if data_dir is not None:
        return Path(data_dir)
    value = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(value) if value else None


def _require_dir(data_dir: str | os.PathLike[str] | None, sub: str) -> Path:
    root = resolve_data_dir(data_dir)
    if root is None:
        raise GraspDataError(
            f"no GRASP data folder: pass data_dir=... or set {DATA_DIR_ENV} to the folder "
            "holding grids/ and greedy_results/ (from github.com/jasontangzs0/GRASP data/)"
        )
    folder = root / sub
    if not folder.is_dir():
        raise GraspDataError(
            f"GRASP data folder {root} has no {sub}/ (set data_dir or {DATA_DIR_ENV} to the "
            "folder holding grids/ and greedy_results/)"
        )
    return folder


def _stems(files: Iterable[str] | None) -> tuple[str, ...]:
    if files is None:
        return CATEGORIES
    stems = tuple(Path(f).name.removesuffix(".jsonl") for f in files)
    unknown = [s for s in stems if s not in CATEGORIES]
    if unknown:
        raise GraspDataError(f"unknown GRASP files {unknown}; choose from {list(CATEGORIES)}")
    return stems


def load_published_grids(
    data_dir: str | os.PathLike[str] | None = None, files: Iterable[str] | None = None
) -> list[GraspGrid]:
    """All grids of ``files`` (stems like ``inner_cluster_block``; default all 20), in order."""
    folder = _require_dir(data_dir, "grids")
    grids: list[GraspGrid] = []
    for stem in _stems(files):
        grids.extend(_read_grid_file(folder / f"{stem}.jsonl"))
    return grids


@functools.lru_cache(maxsize=64)
def _read_grid_file(path: Path) -> tuple[GraspGrid, ...]:
    if not path.is_file():
        raise GraspDataError(f"missing GRASP grid file {path}")
    grids = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                parsed = parse_ascii_grid(record["grid"], record["start"])
                grids.append(
                    GraspGrid(
                        rows=parsed.rows,
                        start=parsed.start,
                        category=path.stem,
                        index=int(record["index"]),
                        energy_probability=float(record["energy_probability"]),
                    )
                )
            except (ValueError, KeyError, TypeError) as error:
                raise GraspDataError(f"{path}:{number}: bad GRASP record ({error})") from error
    return tuple(grids)


def load_published_greedy(
    data_dir: str | os.PathLike[str] | None,
    *,
    movement: int,
    carry_limit: int,
    cost_per_step: float,
    files: Iterable[str] | None = None,
) -> dict[str, list[str]]:
    """The published greedy baseline's answers for one setting: ``{"stem/index": actions}``."""
    folder = _require_dir(data_dir, "greedy_results")
    answers: dict[str, list[str]] = {}
    for stem in _stems(files):
        path = folder / f"{stem}.jsonl"
        if not path.is_file():
            raise GraspDataError(f"missing GRASP greedy file {path}")
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                record = json.loads(line)
                if (
                    int(record["movement_prompt"]) == movement
                    and int(record["energy_limit_prompt"]) == carry_limit
                    and abs(float(record["cost_of_step_prompt"]) - cost_per_step) < 1e-9
                ):
                    answers[f"{stem}/{int(record['index'])}"] = [str(a) for a in record["answer"]]
    return answers


# --- generator --------------------------------------------------------------------------


def generate_grid(
    seed: int,
    *,
    start: str | None = None,
    energy: str | None = None,
    obstacle: str | None = None,
) -> GraspGrid:
    """A grid in the style of the published ones (kinds drawn from ``seed`` when not given).

    Reimplemented from the paper's description and the published files' statistics:
    ``random`` puts energy on each cell with p ~ U(0.3, 0.7); ``upDown``/``leftRight`` use p on
    one half and 1 - p on the other; ``cluster`` stamps 3-5 blocks of 3x3; ``spiral`` draws a
    square spiral around the centre with 15% of its cells dropped or jittered; ``block``
    scatters obstacles (p ~ U(0.05, 0.15), over energy); the start is within 2 cells of the
    centre (``inner``) or of the border (``outer``) and never holds energy.
    """
    rng = random.Random(seed)
    start = start or rng.choice(START_KINDS)
    energy = energy or rng.choice(ENERGY_KINDS)
    obstacle = obstacle or rng.choice(OBSTACLE_KINDS)
    if start not in START_KINDS or energy not in ENERGY_KINDS or obstacle not in OBSTACLE_KINDS:
        raise ValueError(f"unknown GRASP kind {start!r}/{energy!r}/{obstacle!r}")
    cells = [[False] * SIZE for _ in range(SIZE)]
    probability: float = -1.0
    if energy in ("random", "upDown", "leftRight"):
        probability = rng.uniform(0.3, 0.7)
        mid = SIZE // 2
        for r in range(SIZE):
            for c in range(SIZE):
                along = r if energy == "upDown" else c
                p = probability
                if energy != "random":
                    p = probability if along < mid else 0.5 if along == mid else 1 - probability
                cells[r][c] = rng.random() < p
    elif energy == "cluster":
        blocks = rng.randint(3, 5)
        probability = float(blocks)
        for _ in range(blocks):
            top, left = rng.randint(0, SIZE - 3), rng.randint(0, SIZE - 3)
            for r in range(top, top + 3):
                for c in range(left, left + 3):
                    cells[r][c] = True
    else:
        for r, c in _spiral(rng):
            cells[r][c] = True
    if start == "inner":
        sr, sc = rng.randint(3, 7), rng.randint(3, 7)
    else:
        border = [
            (r, c) for r in range(SIZE) for c in range(SIZE) if min(r, c, 10 - r, 10 - c) <= 2
        ]
        sr, sc = rng.choice(border)
    blocked = [[False] * SIZE for _ in range(SIZE)]
    if obstacle == "block":
        density = rng.uniform(0.05, 0.15)
        for r in range(SIZE):
            for c in range(SIZE):
                blocked[r][c] = rng.random() < density
    rows = []
    for r in range(SIZE):
        chars = []
        for c in range(SIZE):
            if (r, c) == (sr, sc):
                chars.append("A")
            elif blocked[r][c]:
                chars.append("O")
            else:
                chars.append("E" if cells[r][c] else ".")
        rows.append("".join(chars))
    return GraspGrid(
        rows=tuple(rows),
        start=(sr, sc),
        category=f"{start}_{energy}_{obstacle}",
        index=seed,
        energy_probability=probability,
    )


def _spiral(rng: random.Random) -> list[tuple[int, int]]:
    """A square spiral (one-cell gap between rings) around a jittered centre, with noise."""
    r, c = SIZE // 2 + rng.randint(-1, 1), SIZE // 2 + rng.randint(-1, 1)
    directions = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    turn = rng.randrange(4)
    length = 2
    out: list[tuple[int, int]] = [(r, c)]
    while length <= SIZE - 3:
        for _ in range(2):
            dr, dc = directions[turn % 4]
            for _ in range(length):
                r, c = r + dr, c + dc
                out.append((r, c))
            turn += 1
        length += 2
    noisy = []
    for r, c in out:
        roll = rng.random()
        if roll < 0.08:
            continue
        if roll < 0.15:
            r, c = r + rng.randint(-1, 1), c + rng.randint(-1, 1)
        if 0 <= r < SIZE and 0 <= c < SIZE:
            noisy.append((r, c))
    return noisy


def grid_from_rows(rows: Sequence[str], *, category: str = "custom", index: int = 0) -> GraspGrid:
    """A grid from 11 strings of ``'.'``/``'E'``/``'O'`` and one ``'A'`` (tests, hand-made)."""
    rows = tuple(rows)
    if len(rows) != SIZE or any(len(row) != SIZE or set(row) - set(".EOA") for row in rows):
        raise ValueError(f"a GRASP grid is {SIZE} strings of {SIZE} chars from '.EOA'")
    found = [(r, c) for r, row in enumerate(rows) for c, ch in enumerate(row) if ch == "A"]
    if len(found) != 1:
        raise ValueError(f"a GRASP grid needs exactly one start 'A', got {len(found)}")
    return GraspGrid(rows=rows, start=found[0], category=category, index=index)
