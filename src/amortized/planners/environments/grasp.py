"""GRASP (arXiv 2407.01892): collect energy on an 11x11 grid and bring it back to the start.

Scoring follows the paper's rule, not its repository's scorer (which charges a constant 4 or
8 steps whatever the plan): score = energy lying on the start cell at the end minus
``cost_per_step`` times the number of actions taken (at most 20; later ones are ignored and
not charged). Replays are pure Python and cheap (tens of microseconds), because an
iterative planner scores thousands of program runs.

Edge cases (all actions below are charged and reported as events, none is an error):
moves into an obstacle or off the grid leave the agent in place; ``take`` on a cell without
energy or while carrying ``carry_limit`` units does nothing; ``drop`` with nothing carried
does nothing; ``drop`` away from the start leaves the units there (they can be taken again,
one per ``take``). Diagonal moves may pass between two obstacles (no corner-cutting rule).
Action names are normalized (case, spaces, ``-`` and ``_``: ``"Up Left"`` is ``upleft``);
anything that is not a list/tuple of strings naming this setting's actions (a diagonal in
four-direction mode, ``"wait"``, an int) makes the whole output invalid: score 0, no success.
Success means ``score > 0``.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amortized.errors import AmortizedError
from amortized.planners.environments.base import (
    Action,
    Environment,
    EpisodeResult,
    Instance,
    Observation,
)
from amortized.planners.environments.grasp_data import (
    CATEGORIES,
    SIZE,
    GraspDataError,
    GraspGrid,
    generate_grid,
    grid_from_rows,
    load_published_greedy,
    load_published_grids,
    resolve_data_dir,
)

MAX_ACTIONS = 20
"""The paper's action budget."""

MOVES: dict[str, tuple[int, int]] = {
    "up": (-1, 0),
    "down": (1, 0),
    "left": (0, -1),
    "right": (0, 1),
    "upleft": (-1, -1),
    "upright": (-1, 1),
    "downleft": (1, -1),
    "downright": (1, 1),
}
"""Action name to (row, col) offset: up is row - 1, right is col + 1."""

ACTIONS_4 = ("up", "down", "left", "right", "take", "drop")
ACTIONS_8 = (*ACTIONS_4[:4], "upleft", "upright", "downleft", "downright", "take", "drop")

MAX_EVENTS = 10
_STEP_EVENTS = 7
"""Step events kept before a "... more" line, leaving room for the end-of-episode ones."""


class GraspSettingsError(AmortizedError, ValueError):
    """A GRASP setting outside what the rules allow (movement 4/8, positive carry limit...)."""


@dataclass(frozen=True)
class GraspSettings:
    """One of the paper's settings: movement 4/8 x carry limit 100/2 x cost per step 0/0.3."""

    movement: int = 4
    carry_limit: int = 100
    cost_per_step: float = 0.0
    max_actions: int = MAX_ACTIONS

    def __post_init__(self) -> None:
        if isinstance(self.movement, bool) or self.movement not in (4, 8):
            raise GraspSettingsError(f"GRASP movement must be 4 or 8, got {self.movement!r}")
        if isinstance(self.carry_limit, bool) or not isinstance(self.carry_limit, int):
            raise GraspSettingsError(f"GRASP carry_limit must be an int, got {self.carry_limit!r}")
        if self.carry_limit < 1:
            raise GraspSettingsError(f"GRASP carry_limit must be >= 1, got {self.carry_limit!r}")
        if not isinstance(self.cost_per_step, int | float) or self.cost_per_step < 0:
            raise GraspSettingsError(f"GRASP cost_per_step must be >= 0: {self.cost_per_step!r}")
        if not isinstance(self.max_actions, int) or self.max_actions < 1:
            raise GraspSettingsError(f"GRASP max_actions must be >= 1, got {self.max_actions!r}")
        object.__setattr__(self, "movement", int(self.movement))
        object.__setattr__(self, "cost_per_step", float(self.cost_per_step))

    @property
    def key(self) -> str:
        """``move4-carry100-cost0`` (``-actions30`` appended only when not the paper's 20)."""
        key = f"move{self.movement}-carry{self.carry_limit}-cost{self.cost_per_step:g}"
        return key if self.max_actions == MAX_ACTIONS else f"{key}-actions{self.max_actions}"

    @property
    def action_names(self) -> tuple[str, ...]:
        return ACTIONS_8 if self.movement == 8 else ACTIONS_4

    @classmethod
    def published(cls) -> list[GraspSettings]:
        """The paper's eight settings, in its results files' order."""
        return [
            cls(movement=m, carry_limit=c, cost_per_step=s)
            for m in (4, 8)
            for c in (100, 2)
            for s in (0.0, 0.3)
        ]

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> GraspSettings:
        return cls(
            movement=int(spec["movement"]),
            carry_limit=int(spec["carry_limit"]),
            cost_per_step=float(spec["cost_per_step"]),
            max_actions=int(spec.get("max_actions", MAX_ACTIONS)),
        )


def normalize_action_name(action: object) -> str | None:
    """``"Up Left"`` → ``"upleft"``; ``None`` for anything that is not a string."""
    if not isinstance(action, str):
        return None
    return "".join(ch for ch in action.lower() if ch not in " \t\r\n-_")


def normalize_actions(actions: object, allowed: Sequence[str]) -> tuple[list[str], str | None]:
    """Program output → canonical names, or the reason it cannot be replayed at all."""
    if not isinstance(actions, list | tuple):
        return [], f"expected a list of action names, got {type(actions).__name__}"
    allowed_set = set(allowed)
    names = []
    for position, action in enumerate(actions):
        name = normalize_action_name(action)
        if name is None:
            return [], f"action {position} is {type(action).__name__} {action!r}, not a string"
        if name not in allowed_set:
            hint = " (diagonal moves need movement 8)" if name in MOVES else ""
            return [], f"action {position} {action!r} is not one of {list(allowed)}{hint}"
        names.append(name)
    return names, None


class GraspState:
    """The mutable replay state; one ``step`` per action, returning an event text or None."""

    __slots__ = ("carried", "events", "grid", "limit", "moves", "pos", "start", "steps", "units")

    def __init__(self, grid: Sequence[str], start: Sequence[int], settings: GraspSettings) -> None:
        self.grid = grid
        self.start = (int(start[0]), int(start[1]))
        self.pos = self.start
        self.limit = settings.carry_limit
        self.moves = settings.movement
        self.carried = 0
        self.steps = 0
        self.units: dict[tuple[int, int], int] = {}
        """Energy on cells touched so far (others: 1 on an ``E`` cell, else 0)."""
        self.events: list[str] = []

    def units_at(self, cell: tuple[int, int]) -> int:
        units = self.units.get(cell)
        if units is None:
            return 1 if self.grid[cell[0]][cell[1]] == "E" else 0
        return units

    @property
    def stored(self) -> int:
        """Units lying on the start cell: what the score counts."""
        return self.units.get(self.start, 0)

    def step(self, name: str) -> str | None:
        """Apply one canonical action (validated by the caller); count it; say what went wrong."""
        self.steps += 1
        move = MOVES.get(name)
        if move is not None:
            r, c = self.pos[0] + move[0], self.pos[1] + move[1]
            if not (0 <= r < SIZE and 0 <= c < SIZE):
                return f"'{name}' blocked by the grid edge at {self.pos}"
            if self.grid[r][c] == "O":
                return f"'{name}' blocked by obstacle at ({r}, {c})"
            self.pos = (r, c)
            return None
        if name == "take":
            if self.carried >= self.limit:
                return f"'take' at carry limit {self.limit}"
            units = self.units_at(self.pos)
            if units == 0:
                return f"'take' on empty cell {self.pos}"
            self.units[self.pos] = units - 1
            self.carried += 1
            return None
        if self.carried == 0:
            return f"'drop' with nothing carried at {self.pos}"
        dropped, self.carried = self.carried, 0
        self.units[self.pos] = self.units_at(self.pos) + dropped
        if self.pos != self.start:
            return f"dropped {dropped} units at {self.pos}, not on the start {self.start}"
        return None

    def observation(self, settings: GraspSettings) -> Observation:
        """What a program sees now (the initial observation at step 0)."""
        grid = []
        energy = []
        obstacles = []
        for r, row in enumerate(self.grid):
            chars = []
            for c, ch in enumerate(row):
                units = self.units_at((r, c))
                energy.extend([[r, c]] * units)
                if ch == "O":
                    obstacles.append([r, c])
                chars.append("A" if ch == "A" else "O" if ch == "O" else "E" if units else ".")
            grid.append("".join(chars))
        return {
            "grid": grid,
            "rows": SIZE,
            "cols": SIZE,
            "start": list(self.start),
            "position": list(self.pos),
            "carrying": self.carried,
            "stored": self.stored,
            "energy": energy,
            "obstacles": obstacles,
            "movement": settings.movement,
            "carry_limit": settings.carry_limit,
            "cost_per_step": settings.cost_per_step,
            "max_actions": settings.max_actions,
            "actions_left": settings.max_actions - self.steps,
            "actions": list(settings.action_names),
        }


def rollout_act(act: Callable[[Observation], Any], spec: Mapping[str, Any]) -> list[Any]:
    """Closed-loop driver (runs in the sandbox): feed ``act`` the current observation each step.

    Stops after ``max_actions`` actions, when ``act`` returns ``None``, or at the first action
    that is not valid (kept in the list, so the trusted replay reports it).
    """
    settings = GraspSettings.from_spec(spec)
    state = GraspState(spec["grid"], spec["start"], settings)
    allowed = set(settings.action_names)
    actions: list[Any] = []
    while len(actions) < settings.max_actions:
        action = act(state.observation(settings))
        if action is None:
            break
        actions.append(action)
        name = normalize_action_name(action)
        if name not in allowed:
            break
        state.step(name)
    return actions


def published_greedy_answers(
    data_dir: str | os.PathLike[str] | None, settings: GraspSettings
) -> dict[str, list[str]]:
    """The paper's greedy baseline for ``settings``: ``{"inner_cluster_block/17": actions}``."""
    return load_published_greedy(
        data_dir,
        movement=settings.movement,
        carry_limit=settings.carry_limit,
        cost_per_step=settings.cost_per_step,
    )


class GraspEnvironment(Environment):
    """GRASP under one setting; signature ``GRASP/move{4|8}-carry{N}-cost{C}``.

    Instances come from the published files when ``data_dir`` or ``$AMORTIZED_GRASP_DIR``
    names them, else from the seeded generator (same shape, the 20 categories in turn).
    """

    env_id = "GRASP"
    closed_loop_driver = "amortized.planners.environments.grasp:rollout_act"

    def __init__(
        self,
        settings: GraspSettings | None = None,
        *,
        data_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.settings = settings or GraspSettings()
        self.data_dir = Path(data_dir) if data_dir is not None else None

    @property
    def signature(self) -> str:
        return f"GRASP/{self.settings.key}"

    @property
    def action_names(self) -> tuple[str, ...]:
        return self.settings.action_names

    # --- instances -------------------------------------------------------------------

    def instance(self, grid: GraspGrid, instance_id: str | None = None) -> Instance:
        """Wrap one grid (published, generated or hand-made) with this setting."""
        s = self.settings
        spec = {
            "grid": list(grid.rows),
            "start": list(grid.start),
            "movement": s.movement,
            "carry_limit": s.carry_limit,
            "cost_per_step": s.cost_per_step,
            "max_actions": s.max_actions,
        }
        observation = GraspState(grid.rows, grid.start, s).observation(s)
        return Instance(instance_id or f"{grid.category}/{grid.index}", observation, spec)

    def instance_from_spec(self, spec: dict[str, Any], instance_id: str | None = None) -> Instance:
        """A user's grid: ``{"grid": 11 strings of '.', 'E', 'O' and one 'A'}`` (``"start"``
        [r, c] optional, checked against the ``A``); ``ValueError`` says what is wrong."""
        if not isinstance(spec, dict) or not isinstance(spec.get("grid"), list | tuple):
            raise ValueError('a GRASP instance is {"grid": [11 strings of ".EOA"]}')
        rows = spec["grid"]
        if not all(isinstance(row, str) for row in rows):
            raise ValueError("GRASP grid rows must be strings")
        grid = grid_from_rows(rows)
        start = spec.get("start")
        if start is not None and list(start) != list(grid.start):
            raise ValueError(f"start {start} is not the 'A' cell {list(grid.start)}")
        return self.instance(grid, instance_id or "custom")

    def published_instances(self, files: Iterable[str] | None = None) -> list[Instance]:
        """The benchmark grids (``files``: stems like ``inner_cluster_block``; default all 20).

        Raises ``GraspDataError`` naming ``data_dir`` and ``$AMORTIZED_GRASP_DIR`` when unset.
        """
        return [self.instance(g) for g in load_published_grids(self.data_dir, files)]

    def instances(self, count: int, *, seed: int = 0) -> list[Instance]:
        """Published grids (a seeded sample, file order) when a data folder is set, else
        generated ones cycling through the 20 categories (ids ``{category}/gen{seed}-{i}``)."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if resolve_data_dir(self.data_dir) is not None:
            every = self.published_instances()
            if count > len(every):
                raise GraspDataError(f"asked for {count} GRASP grids, the data has {len(every)}")
            chosen = sorted(random.Random(seed).sample(range(len(every)), count))
            return [every[i] for i in chosen]
        out = []
        for i in range(count):
            start, energy, obstacle = CATEGORIES[(seed + i) % len(CATEGORIES)].split("_")
            grid = generate_grid(
                seed * 1_000_003 + i, start=start, energy=energy, obstacle=obstacle
            )
            out.append(self.instance(grid, f"{grid.category}/gen{seed}-{i}"))
        return out

    # --- scoring ---------------------------------------------------------------------

    def _replay(self, instance: Instance, names: Sequence[str]) -> GraspState:
        spec = instance.spec
        if (
            spec["movement"] != self.settings.movement
            or spec["carry_limit"] != self.settings.carry_limit
            or spec["cost_per_step"] != self.settings.cost_per_step
        ):
            raise ValueError(f"instance {instance.instance_id} was made for another setting")
        state = GraspState(spec["grid"], spec["start"], self.settings)
        events = state.events
        for name in names[: self.settings.max_actions]:
            event = state.step(name)
            if event is not None:
                events.append(f"step {state.steps}: {event}")
        return state

    def evaluate(self, instance: Instance, actions: object) -> EpisodeResult:
        names, problem = normalize_actions(actions, self.settings.action_names)
        if problem is not None:
            return EpisodeResult(instance.instance_id, 0.0, False, 0, (), problem)
        state = self._replay(instance, names)
        score = round(state.stored - self.settings.cost_per_step * state.steps, 9)
        events = state.events
        if len(events) > _STEP_EVENTS:
            events = [*events[:_STEP_EVENTS], f"... {len(events) - _STEP_EVENTS} more step events"]
        limit = self.settings.max_actions
        if len(names) > limit:
            events.append(f"actions {limit + 1}+ ignored ({len(names)} returned)")
        if state.carried:
            events.append(
                f"ended at {state.pos} carrying {state.carried} units not dropped on the start"
            )
        return EpisodeResult(instance.instance_id, score, score > 0, state.steps, tuple(events))

    # --- text for prompts --------------------------------------------------------------

    def render(self, instance: Instance, actions: Sequence[Action] | None = None) -> str:
        """Compact grid (``r c`` indices); with actions, a per-step trace and the path overlay."""
        spec = instance.spec
        rows: list[str] = list(spec["grid"])
        s = self.settings
        header = (
            f"GRASP {s.key}: start A at {tuple(spec['start'])} (row, col), "
            f"{sum(row.count('E') for row in rows)} energy E, "
            f"{sum(row.count('O') for row in rows)} obstacles O"
        )
        if actions is None:
            return "\n".join([header, *_grid_lines(rows)])
        names, problem = normalize_actions(list(actions), s.action_names)
        if problem is not None:
            return "\n".join([header, *_grid_lines(rows), f"invalid actions: {problem}"])
        state = GraspState(rows, spec["start"], s)
        trace = []
        visited = {state.start}
        taken = set()
        for name in names[: s.max_actions]:
            before = state.carried
            event = state.step(name)
            visited.add(state.pos)
            if state.carried > before:
                taken.add(state.pos)
            note = f"  <- {event}" if event else ""
            trace.append(
                f"{state.steps:>2}. {name:<9} at {state.pos} carrying {state.carried}, "
                f"start holds {state.stored}{note}"
            )
        if len(names) > s.max_actions:
            trace.append(
                f"    ({len(names) - s.max_actions} actions beyond {s.max_actions} ignored)"
            )
        overlay = []
        for r, row in enumerate(rows):
            chars = []
            for c, ch in enumerate(row):
                cell = (r, c)
                if ch in "AO":
                    chars.append(ch)
                elif cell == state.pos:
                    chars.append("@")
                elif state.units_at(cell):
                    chars.append("E")
                elif cell in taken:
                    chars.append("x")
                else:
                    chars.append("*" if cell in visited else ".")
            overlay.append("".join(chars))
        score = state.stored - s.cost_per_step * state.steps
        return "\n".join(
            [
                header,
                *trace,
                "path (* visited, x energy taken, @ final position):",
                *_grid_lines(overlay),
                f"score: {state.stored} on start - {s.cost_per_step:g} x {state.steps} actions"
                f" = {score:.6g}",
            ]
        )

    def describe(self) -> str:
        s = self.settings
        names = json.dumps(list(s.action_names))
        moves = [f'"{n}" {MOVES[n]}' for n in s.action_names if n in MOVES]
        move_lines = "\n".join("    " + ", ".join(moves[i : i + 4]) for i in (0, 4) if moves[i:])
        carry = (
            "you may carry any number of units"
            if s.carry_limit >= 100
            else f"you can carry at most {s.carry_limit} units at once"
        )
        cost = (
            "Actions are free; only the budget limits you."
            if s.cost_per_step == 0
            else f"Every action costs {s.cost_per_step:g}, so only detour for energy when it "
            "pays; returning [] scores 0."
        )
        return f"""\
GRASP energy collection ({self.signature}).
An 11x11 grid (rows 0-10 top to bottom, columns 0-10 left to right) holds energy cells (E,
one unit each), obstacles (O) and your start cell (A, no energy). You start at A carrying 0.
Goal: maximize  score = (units of energy lying on the start cell at the end)
                        - {s.cost_per_step:g} x (number of actions you take).
Actions (strings; at most {s.max_actions}, any beyond are ignored and not charged):
- moves, as (row, col) offsets:
{move_lines}
  A move into an obstacle or off the grid does nothing but still counts as an action.
  Diagonal moves may slip between two obstacles.
- "take": pick up one unit from your cell; {carry}. On a cell without energy,
  or at the carry limit, it does nothing (still counted).
- "drop": put everything you carry on your cell. Only units on the start cell score; units
  dropped elsewhere stay there and can be taken again. Dropping nothing does nothing.
Energy still carried at the end scores nothing: come back to A and "drop".
{cost}
Any action string not in the list below makes the whole answer invalid (score 0).

Write `solve(observation) -> list[str]` (the whole plan from the initial state), or
`act(observation) -> str | None` (one action per call, None to stop). observation (JSON):
  "grid": 11 strings, grid[r][c] in '.', 'E' (energy), 'O' (obstacle), 'A' (start),
  "rows": 11, "cols": 11, "start": [r, c], "position": [r, c] (where you are now),
  "carrying": units carried, "stored": units on the start cell,
  "energy": [[r, c], ...] one entry per unit lying on the grid,
  "obstacles": [[r, c], ...], "movement": {s.movement}, "carry_limit": {s.carry_limit},
  "cost_per_step": {s.cost_per_step:g}, "max_actions": {s.max_actions}, "actions_left": int,
  "actions": {names}.
Use only the Python standard library."""


def _grid_lines(rows: Sequence[str]) -> list[str]:
    lines = ["    " + " ".join(str(c) for c in range(len(rows[0])))]
    lines += [f"{r:>2}  " + " ".join(row) for r, row in enumerate(rows)]
    return lines
