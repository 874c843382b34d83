"""MiniGrid tasks (DoorKey, Unlock, UnlockPickup... any ``MiniGrid-*`` id) for policy programs.

Programs get the full state as JSON (an ASCII map plus an object list, not the egocentric
image, which an LLM cannot read well) and return actions; the trusted parent replays them in a
fresh ``env.reset(seed=...)`` and scores with the environment's own reward
(``1 - 0.9 * steps / max_steps`` on success). ``minigrid``/``gymnasium`` load lazily (the
``planners`` extra), so importing this module costs nothing.

Replays build the env once per thread and silence its image observation (``gen_obs``), which
nobody reads here and which costs most of a step.
"""

from __future__ import annotations

import difflib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from amortized.errors import AmortizedError
from amortized.planners.environments.base import (
    Action,
    Environment,
    EpisodeResult,
    Instance,
    Observation,
)

ACTIONS: dict[str, int] = {
    "left": 0,
    "right": 1,
    "forward": 2,
    "pickup": 3,
    "drop": 4,
    "toggle": 5,
    "done": 6,
}
"""MiniGrid's action numbers; programs may return either the name or the number."""
ACTION_NAMES = tuple(ACTIONS)

DIRECTIONS = ((1, 0), (0, 1), (-1, 0), (0, -1))
"""``agent_dir`` → (dx, dy): 0 right (+x), 1 down (+y), 2 left, 3 up."""
_ARROWS = ">v<^"

CELL_CHARS = {
    "empty": ".",
    "floor": ".",
    "wall": "#",
    "goal": "G",
    "lava": "V",
    "key": "K",
    "ball": "B",
    "box": "X",
}
DOOR_CHARS = {"open": "O", "closed": "D", "locked": "L"}
"""Doors by state: open (walkable), closed (toggle opens), locked (toggle with its key)."""

PAPER_ENV_IDS = ("MiniGrid-DoorKey-8x8-v0", "MiniGrid-Unlock-v0", "MiniGrid-UnlockPickup-v0")
MAX_EVENTS = 10
_STEP_EVENTS = 7


class MiniGridError(AmortizedError, ValueError):
    """MiniGrid is not installed, or the environment id / settings are not usable."""


def _gym() -> Any:
    try:
        import gymnasium
        import minigrid  # noqa: F401  (registers the MiniGrid-* ids)
    except ImportError as error:  # pragma: no cover - depends on the install
        raise MiniGridError(
            "MiniGrid environments need the planners extra: pip install 'amortized[planners]'"
        ) from error
    return gymnasium


def minigrid_env_ids() -> list[str]:
    """Every registered ``MiniGrid-*`` id (BabyAI ids excluded)."""
    return [name for name in _gym().registry if name.startswith("MiniGrid-")]


def make_fast_env(env_id: str) -> Any:
    """The unwrapped env, headless, with its image observation replaced by a no-op."""
    env = _gym().make(env_id, render_mode=None).unwrapped
    env.gen_obs = dict  # instance attribute: ``step`` and ``reset`` call it, nobody reads it
    return env


def _state(cell: Any) -> str:
    return "open" if cell.is_open else "locked" if cell.is_locked else "closed"


def observe(env: Any, env_id: str) -> Observation:
    """The JSON observation of an unwrapped MiniGrid env's current state."""
    grid = env.grid
    rows = []
    objects = []
    for y in range(grid.height):
        chars = []
        for x in range(grid.width):
            cell = grid.get(x, y)
            if cell is None:
                chars.append(".")
                continue
            if cell.type == "door":
                state = _state(cell)
                chars.append(DOOR_CHARS[state])
                objects.append({"type": "door", "color": cell.color, "pos": [x, y], "state": state})
                continue
            chars.append(CELL_CHARS.get(cell.type, "?"))
            if cell.type not in ("wall", "empty", "floor"):
                objects.append({"type": cell.type, "color": cell.color, "pos": [x, y]})
        rows.append("".join(chars))
    x, y = (int(v) for v in env.agent_pos)
    direction = int(env.agent_dir)
    dx, dy = DIRECTIONS[direction]
    carrying = env.carrying
    return {
        "env_id": env_id,
        "width": int(grid.width),
        "height": int(grid.height),
        "grid": rows,
        "objects": objects,
        "agent_pos": [x, y],
        "agent_dir": direction,
        "front_pos": [x + dx, y + dy],
        "carrying": None if carrying is None else {"type": carrying.type, "color": carrying.color},
        "mission": str(env.mission),
        "step_count": int(env.step_count),
        "max_steps": int(env.max_steps),
        "actions": dict(ACTIONS),
    }


def normalize_action(action: object) -> int | None:
    """``"Forward "``/``2`` → 2; ``None`` for anything else (bools, floats, unknown names)."""
    if isinstance(action, bool):
        return None
    if isinstance(action, int):
        return action if 0 <= action < len(ACTIONS) else None
    if isinstance(action, str):
        return ACTIONS.get(action.strip().lower())
    return None


def normalize_actions(actions: object) -> tuple[list[int], str | None]:
    """Program output → action numbers, or the reason it cannot be replayed at all."""
    if not isinstance(actions, list | tuple):
        return [], f"expected a list of actions, got {type(actions).__name__}"
    out = []
    for position, action in enumerate(actions):
        number = normalize_action(action)
        if number is None:
            return [], (
                f"action {position} {action!r} is not one of {list(ACTIONS)} "
                f"(or their numbers 0-{len(ACTIONS) - 1})"
            )
        out.append(number)
    return out, None


def _rollout_act(act: Callable[[Observation], Any], spec: Mapping[str, Any]) -> list[Any]:
    """Closed-loop driver (runs in the sandbox): ``act`` sees the state before every step.

    Stops at termination, truncation (``max_steps``), when ``act`` returns ``None``, or at
    the first invalid action (kept in the list, so the trusted replay reports it). Exposed as
    ``rollout_act`` through the module ``__getattr__`` below.
    """
    env_id = str(spec["env_id"])
    env = make_fast_env(env_id)
    env.reset(seed=int(spec["seed"]))
    actions: list[Any] = []
    while True:
        action = act(observe(env, env_id))
        if action is None:
            break
        actions.append(action)
        number = normalize_action(action)
        if number is None:
            break
        _, _, terminated, truncated, _ = env.step(number)
        if terminated or truncated:
            break
    return actions


def __getattr__(name: str) -> Any:
    """``rollout_act`` imports gymnasium and minigrid on first access, not at module import.

    The sandbox worker looks its driver up before applying its import guard, so the heavy
    imports happen then (a later ``import gymnasium`` inside the guarded program would be
    refused), while ``import amortized.planners.environments`` stays fast everywhere else.
    """
    if name == "rollout_act":
        _gym()
        return _rollout_act
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _describe_cell(cell: Any) -> str:
    if cell.type == "door":
        return f"{_state(cell)} {cell.color} door"
    if cell.type in ("wall", "lava", "goal"):
        return str(cell.type)
    return f"{cell.color} {cell.type}"


def _step_event(env: Any, number: int) -> str | None:
    """What is about to go wrong with this action, judged before ``env.step``."""
    fx, fy = (int(v) for v in env.front_pos)
    inside = 0 <= fx < env.grid.width and 0 <= fy < env.grid.height
    front = env.grid.get(fx, fy) if inside else None
    carrying = env.carrying
    name = ACTION_NAMES[number]
    if name == "forward":
        if front is not None and front.type == "lava":
            return f"forward into lava at ({fx}, {fy})"
        if front is not None and not front.can_overlap():
            return f"forward blocked by {_describe_cell(front)} at ({fx}, {fy})"
    elif name == "pickup":
        if front is None or not front.can_pickup():
            what = "nothing" if front is None else _describe_cell(front)
            return f"pickup with {what} in front at ({fx}, {fy})"
        if carrying is not None:
            return f"pickup while already carrying the {carrying.color} {carrying.type}"
    elif name == "drop":
        if carrying is None:
            return "drop with nothing carried"
        if front is not None:
            return f"drop blocked by {_describe_cell(front)} at ({fx}, {fy})"
    elif name == "toggle":
        if front is None or front.type not in ("door", "box"):
            what = "nothing" if front is None else _describe_cell(front)
            return f"toggle with no door in front ({what} at ({fx}, {fy}))"
        has_key = carrying is not None and (carrying.type, carrying.color) == ("key", front.color)
        if front.type == "door" and front.is_locked and not has_key:
            return f"toggle on the locked {front.color} door without the {front.color} key"
    elif name == "done":
        return "done does nothing in this environment"
    return None


class MiniGridEnvironment(Environment):
    """One MiniGrid id; instances are seeds (``{"env_id": ..., "seed": s}``); max score 1."""

    closed_loop_driver = "amortized.planners.environments.minigrid:rollout_act"
    max_score = 1.0

    def __init__(self, env_id: str) -> None:
        ids = minigrid_env_ids()
        if env_id not in ids:
            close = difflib.get_close_matches(env_id, ids, n=3, cutoff=0.5)
            raise MiniGridError(
                f"unknown MiniGrid environment {env_id!r}; close: {close or list(PAPER_ENV_IDS)}"
            )
        self.env_id = env_id
        self._local = threading.local()

    def _env(self) -> Any:
        env = getattr(self._local, "env", None)
        if env is None:
            env = self._local.env = make_fast_env(self.env_id)
        return env

    @property
    def signature(self) -> str:
        return self.env_id

    @property
    def action_names(self) -> tuple[str, ...]:
        return ACTION_NAMES

    def instance(self, seed: int) -> Instance:
        env = self._env()
        env.reset(seed=seed)
        spec = {"env_id": self.env_id, "seed": seed}
        return Instance(f"{self.env_id}/{seed}", observe(env, self.env_id), spec)

    def instance_from_spec(self, spec: dict[str, Any], instance_id: str | None = None) -> Instance:
        """``{"seed": s}`` (``"env_id"`` optional, must be this one); ``ValueError`` if not."""
        if not isinstance(spec, dict):
            raise ValueError('a MiniGrid instance is {"seed": int}')
        seed = spec.get("seed")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ValueError(f"MiniGrid seed must be a non-negative int, got {seed!r}")
        if spec.get("env_id", self.env_id) != self.env_id:
            raise ValueError(f"instance is for {spec.get('env_id')!r}, not {self.env_id}")
        instance = self.instance(seed)
        if instance_id is None:
            return instance
        return Instance(instance_id, instance.observation, instance.spec)

    def instances(self, count: int, *, seed: int = 0) -> list[Instance]:
        """Seeds ``seed, seed + 1, ..., seed + count - 1``."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        return [self.instance(seed + i) for i in range(count)]

    def _reset(self, instance: Instance) -> Any:
        if instance.spec.get("env_id") != self.env_id:
            raise ValueError(f"instance {instance.instance_id} is not a {self.env_id} instance")
        env = self._env()
        env.reset(seed=int(instance.spec["seed"]))
        return env

    def evaluate(self, instance: Instance, actions: object) -> EpisodeResult:
        numbers, problem = normalize_actions(actions)
        if problem is not None:
            return EpisodeResult(instance.instance_id, 0.0, False, 0, (), problem)
        env = self._reset(instance)
        events: list[str] = []
        score = 0.0
        terminated = truncated = False
        taken = 0
        for number in numbers:
            event = _step_event(env, number)
            _, reward, terminated, truncated, _ = env.step(number)
            taken += 1
            score += float(reward)
            if event is not None:
                events.append(f"step {taken}: {event}")
            if terminated or truncated:
                break
        if len(events) > _STEP_EVENTS:
            events = [*events[:_STEP_EVENTS], f"... {len(events) - _STEP_EVENTS} more step events"]
        success = terminated and score > 0
        if len(numbers) > taken:
            events.append(
                f"actions after step {taken} ignored (episode over; {len(numbers)} given)"
            )
        if not success:
            x, y = (int(v) for v in env.agent_pos)
            where = f"at ({x}, {y}) facing {_ARROWS[int(env.agent_dir)]}"
            if truncated:
                events.append(f"hit the step limit ({env.max_steps}) without success, {where}")
            elif terminated:
                events.append(f"episode ended without reward after {taken} actions, {where}")
            else:
                events.append(f"actions ran out after {taken} without success, {where}")
        return EpisodeResult(
            instance.instance_id, round(score, 9), success, taken, tuple(events[:MAX_EVENTS])
        )

    def render(self, instance: Instance, actions: Sequence[Action] | None = None) -> str:
        """ASCII map (agent as ``>v<^``); with actions, a per-step trace and the final map."""
        env = self._reset(instance)
        header = f"{self.env_id} seed {instance.spec['seed']}: {env.mission}"
        if actions is None:
            return "\n".join([header, *_map_lines(env, self.env_id)])
        numbers, problem = normalize_actions(list(actions))
        if problem is not None:
            return "\n".join([header, *_map_lines(env, self.env_id), f"invalid: {problem}"])
        trace = []
        score = 0.0
        for step, number in enumerate(numbers, 1):
            event = _step_event(env, number)
            _, reward, terminated, truncated, _ = env.step(number)
            score += float(reward)
            x, y = (int(v) for v in env.agent_pos)
            held = env.carrying
            note = f"  <- {event}" if event else ""
            carry = f", carrying {held.color} {held.type}" if held is not None else ""
            trace.append(
                f"{step:>3}. {ACTION_NAMES[number]:<7} at ({x}, {y}) "
                f"facing {_ARROWS[int(env.agent_dir)]}{carry}{note}"
            )
            if terminated or truncated:
                trace.append(f"     episode over ({'success' if score > 0 else 'no reward'})")
                break
        if len(trace) > 60:
            trace = [*trace[:45], f"     ... {len(trace) - 55} steps ...", *trace[-10:]]
        return "\n".join(
            [header, *trace, "final state:", *_map_lines(env, self.env_id), f"reward: {score:.4f}"]
        )

    def describe(self) -> str:
        env = self._env()
        env.reset(seed=0)
        mission = {
            "MiniGrid-DoorKey-8x8-v0": "reach the green goal square; a locked door blocks the "
            "way and the key of its colour lies on your side",
            "MiniGrid-Unlock-v0": "open the locked door (toggle it while carrying the key of "
            "its colour); the episode succeeds the moment it opens",
            "MiniGrid-UnlockPickup-v0": "pick up the box behind the locked door; you can carry "
            "only one object, so drop the key (on an empty cell in front of you) first",
        }.get(self.env_id, f"mission text such as {env.mission!r}")
        return f"""\
MiniGrid {self.env_id}: {mission}.
The world is a grid of width x height cells; position [x, y] has x growing to the right and
y growing downward; the border is wall. The agent occupies one cell and faces a direction
agent_dir: 0 = right (+x), 1 = down (+y), 2 = left (-x), 3 = up (-y).
Actions (return names or numbers): {json.dumps(ACTIONS)}.
- left / right: turn 90 degrees in place.  forward: move to the cell in front if it is empty,
  floor, goal or an open door (walls, closed/locked doors, keys, balls and boxes block).
- pickup: take the key/ball/box in front (only when carrying nothing).
- drop: put the carried object on the empty cell in front.
- toggle: open/close the door in front; a locked door opens only while carrying the key of
  the same colour (it then stays unlocked).  done: does nothing.
Every action counts a step; success reward = 1 - 0.9 * steps / max_steps, 0 on failure or
when max_steps run out. Actions after the episode ends are ignored.

Write `solve(observation) -> list` (the whole plan from the initial state) or
`act(observation) -> action | None` (called before every step; None stops). observation:
  "grid": height strings of width chars, grid[y][x]: '#' wall, '.' empty, 'G' goal,
     'V' lava, 'K' key, 'B' ball, 'X' box, 'D' closed door, 'L' locked door, 'O' open door
     (the agent is not drawn),
  "objects": [{{"type": "key"|"ball"|"box"|"door"|"goal"|"lava", "color": str,
     "pos": [x, y], "state": "open"|"closed"|"locked" (doors only)}}, ...],
  "agent_pos": [x, y], "agent_dir": 0-3, "front_pos": [x, y] (cell in front),
  "carrying": null or {{"type": str, "color": str}}, "mission": str,
  "width", "height", "step_count", "max_steps", "env_id", "actions": {json.dumps(ACTIONS)}.
Use only the Python standard library."""


def _map_lines(env: Any, env_id: str) -> list[str]:
    observation = observe(env, env_id)
    rows = [list(row) for row in observation["grid"]]
    x, y = observation["agent_pos"]
    rows[y][x] = _ARROWS[observation["agent_dir"]]
    width = observation["width"]
    lines = ["    " + "".join(str(i % 10) for i in range(width))]
    lines += [f"{i:>3} " + "".join(row) for i, row in enumerate(rows)]
    if observation["carrying"]:
        held = observation["carrying"]
        lines.append(f"carrying the {held['color']} {held['type']}")
    return lines
