"""MiniGrid reference policy: breadth-first search over (x, y, direction), one subgoal at a time.

Reads the mission (reach the goal / open the door / pick up an object) and plans open loop
from the initial observation, simulating its own actions: if the target cannot be reached,
fetch the key of a reachable locked door (dropping whatever is carried), open the door and
try again; before picking up the target, drop the carried key on a cell that does not cut
the way to it.
"""

from collections import deque
from typing import Any

DIRS = [(1, 0), (0, 1), (-1, 0), (0, -1)]
WALKABLE = ".GO"
"""Empty cell, goal, open door."""

Pos = tuple[int, int]
State = tuple[int, int, int]


def solve(observation: dict[str, Any]) -> list[str]:
    cells = [list(row) for row in observation["grid"]]
    width: int = observation["width"]
    height: int = observation["height"]
    color: dict[Pos, str] = {}
    for obj in observation["objects"]:
        color[(obj["pos"][0], obj["pos"][1])] = obj["color"]
    x, y = observation["agent_pos"]
    agent: State = (x, y, observation["agent_dir"])
    carried = observation["carrying"]
    holding = None if carried is None else (str(carried["type"]), str(carried["color"]))
    plan: list[str] = []
    type_char = {"key": "K", "ball": "B", "box": "X"}

    def front(state: State) -> Pos:
        dx, dy = DIRS[state[2]]
        return (state[0] + dx, state[1] + dy)

    def inside(pos: Pos) -> bool:
        return 0 <= pos[0] < width and 0 <= pos[1] < height

    def route(start: State, done: Any) -> list[str] | None:
        """Shortest turn/forward sequence from ``start`` to a state where ``done(state)``."""
        parent: dict[State, tuple[State, str] | None] = {start: None}
        queue = deque([start])
        while queue:
            state = queue.popleft()
            if done(state):
                steps = []
                while parent[state] is not None:
                    state, name = parent[state]  # type: ignore[misc]
                    steps.append(name)
                return steps[::-1]
            px, py, d = state
            ahead = front(state)
            moves = [("left", (px, py, (d + 3) % 4)), ("right", (px, py, (d + 1) % 4))]
            if inside(ahead) and cells[ahead[1]][ahead[0]] in WALKABLE:
                moves.append(("forward", (ahead[0], ahead[1], d)))
            for name, nxt in moves:
                if nxt not in parent:
                    parent[nxt] = (state, name)
                    queue.append(nxt)
        return None

    def facing(target: Pos) -> Any:
        return lambda state: front(state) == target

    def standing(target: Pos) -> Any:
        return lambda state: (state[0], state[1]) == target

    def follow(steps: list[str]) -> None:
        nonlocal agent
        for name in steps:
            px, py, d = agent
            if name == "left":
                agent = (px, py, (d + 3) % 4)
            elif name == "right":
                agent = (px, py, (d + 1) % 4)
            else:
                fx, fy = front(agent)
                agent = (fx, fy, d)
            plan.append(name)

    def go(done: Any) -> bool:
        steps = route(agent, done)
        if steps is None:
            return False
        follow(steps)
        return True

    def find(char: str, wanted_color: str | None = None) -> list[Pos]:
        return [
            (cx, cy)
            for cy in range(height)
            for cx in range(width)
            if cells[cy][cx] == char
            and (wanted_color is None or color.get((cx, cy)) == wanted_color)
        ]

    def pick_up(target: Pos) -> bool:
        nonlocal holding
        if holding is not None and not drop_somewhere(target):
            return False
        if not go(facing(target)):
            return False
        plan.append("pickup")
        char = cells[target[1]][target[0]]
        kind = {v: k for k, v in type_char.items()}[char]
        holding = (kind, color.get(target, ""))
        cells[target[1]][target[0]] = "."
        return True

    def drop_somewhere(keep_reachable: Pos | None) -> bool:
        """Drop what we hold in front of us, on a cell that keeps ``keep_reachable`` in reach."""
        nonlocal holding

        def good(state: State) -> bool:
            spot = front(state)
            if not inside(spot) or cells[spot[1]][spot[0]] != "." or spot == keep_reachable:
                return False
            if keep_reachable is None:
                return True
            cells[spot[1]][spot[0]] = "#"
            ok = route(state, facing(keep_reachable)) is not None
            cells[spot[1]][spot[0]] = "."
            return ok

        if holding is None:
            return True
        if not go(good):
            return False
        spot = front(agent)
        plan.append("drop")
        cells[spot[1]][spot[0]] = type_char.get(holding[0], "X")
        color[spot] = holding[1]
        holding = None
        return True

    def open_door(door: Pos) -> bool:
        if cells[door[1]][door[0]] == "L":
            door_color = color.get(door)
            if holding != ("key", door_color):
                keys = [k for k in find("K", door_color) if route(agent, facing(k)) is not None]
                if not keys or not pick_up(keys[0]):
                    return False
        if not go(facing(door)):
            return False
        plan.append("toggle")
        cells[door[1]][door[0]] = "O"
        return True

    def attempt(step: Any, *args: Any) -> bool:
        """Run a subgoal; on failure, forget what it planned and simulated."""
        nonlocal agent, holding
        saved = ([row[:] for row in cells], dict(color), agent, holding, len(plan))
        if step(*args):
            return True
        cells[:], color_saved, agent, holding, length = saved
        color.clear()
        color.update(color_saved)
        del plan[length:]
        return False

    def unblock() -> bool:
        """Open a closed or locked door (nearest first) that we can get to and open."""
        doors = find("D") + find("L")
        doors.sort(key=lambda d: abs(d[0] - agent[0]) + abs(d[1] - agent[1]))
        return any(attempt(open_door, door) for door in doors)

    mission = observation["mission"].lower()
    words = mission.replace(".", " ").split()
    named_colors = [obj["color"] for obj in observation["objects"] if obj["color"] in words]
    for _ in range(8):
        if "pick up" in mission:
            targets = [
                (obj["pos"][0], obj["pos"][1])
                for obj in observation["objects"]
                if obj["type"] in words
                and obj["type"] != "door"
                and (obj["color"] in words or not named_colors)
            ]
            targets = [t for t in targets if cells[t[1]][t[0]] in "KBX"]
            reachable = [t for t in targets if route(agent, facing(t)) is not None]
            if reachable:
                pick_up(reachable[0])
                break
        elif "open" in mission and "door" in mission and "goal" not in mission:
            doors = find("D") + find("L")
            if not doors:
                break
            if any(attempt(open_door, door) for door in doors):
                break
        else:
            goals = find("G")
            if goals and go(standing(goals[0])):
                break
        if not unblock():
            break
    return plan


def act(observation: dict[str, Any]) -> str | None:
    """Closed-loop form: replan from the current state and take the first action."""
    plan = solve(observation)
    return plan[0] if plan else None
