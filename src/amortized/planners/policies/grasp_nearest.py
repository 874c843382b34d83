"""GRASP: the plain nearest-first BFS greedy (the pseudocode outline, as an LLM writes it).

Walk to the nearest energy by BFS, take it, go home when the carry limit is reached or the
remaining actions only just cover the way back, drop; with a cost per step, only energy
whose walk and take cost less than the unit is worth. No lookahead: the typical program the
sandbox throughput target is measured with, and a weaker baseline than ``grasp_greedy``.
"""

from collections import deque
from typing import Any

OFFSETS = {
    "up": (-1, 0),
    "down": (1, 0),
    "left": (0, -1),
    "right": (0, 1),
    "upleft": (-1, -1),
    "upright": (-1, 1),
    "downleft": (1, -1),
    "downright": (1, 1),
}


def solve(observation: dict[str, Any]) -> list[str]:
    grid = observation["grid"]
    rows, cols = observation["rows"], observation["cols"]
    start = tuple(observation["start"])
    limit = observation["carry_limit"]
    cost = observation["cost_per_step"]
    budget = observation.get("actions_left", observation["max_actions"])
    moves = [(n, OFFSETS[n]) for n in observation["actions"] if n in OFFSETS]
    energy = {tuple(cell) for cell in observation["energy"]} - {start}

    def bfs(source: tuple[int, int]) -> dict[tuple[int, int], tuple[tuple[int, int], str, int]]:
        """Parent, step name and distance of every reachable cell."""
        parents = {source: (source, "", 0)}
        queue = deque([source])
        while queue:
            r, c = queue.popleft()
            distance = parents[(r, c)][2] + 1
            for name, (dr, dc) in moves:
                nr, nc = r + dr, c + dc
                inside = 0 <= nr < rows and 0 <= nc < cols
                if inside and grid[nr][nc] != "O" and (nr, nc) not in parents:
                    parents[(nr, nc)] = ((r, c), name, distance)
                    queue.append((nr, nc))
        return parents

    def path(
        parents: dict[tuple[int, int], tuple[tuple[int, int], str, int]], cell: tuple[int, int]
    ) -> list[str]:
        steps = []
        while parents[cell][1]:
            cell, name, _ = parents[cell]
            steps.append(name)
        return steps[::-1]

    home = bfs(start)
    plan: list[str] = []
    here = tuple(observation.get("position", start))
    carrying = observation.get("carrying", 0)

    def way_home(cell: tuple[int, int]) -> list[str]:
        return [_opposite(a) for a in reversed(path(home, cell))]

    while True:
        parents = bfs(here)
        targets = sorted((parents[e][2], e) for e in energy if e in parents)
        chosen = None
        for distance, cell in targets:
            needed = distance + 1 + home[cell][2] + 1
            if len(plan) + needed <= budget and cost * (distance + 1) < 1:
                chosen = cell
                break
        if chosen is None:
            break
        plan += [*path(parents, chosen), "take"]
        energy.discard(chosen)
        here, carrying = chosen, carrying + 1
        if carrying >= limit:
            plan += [*way_home(here), "drop"]
            here, carrying = start, 0
    if carrying:
        plan += [*way_home(here), "drop"]
    return plan[:budget]


def _opposite(action: str) -> str:
    swap = {"up": "down", "down": "up", "left": "right", "right": "left"}
    parts = (
        action.replace("up", "U").replace("down", "D").replace("left", "L").replace("right", "R")
    )
    names = {"U": "up", "D": "down", "L": "left", "R": "right"}
    if len(parts) == 1:
        return swap[action]
    return "".join(swap[names[p]] for p in parts)


def act(observation: dict[str, Any]) -> str | None:
    """Closed-loop form: replan from the current state and take the first action."""
    plan = solve(observation)
    return plan[0] if plan else None
