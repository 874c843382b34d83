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
OPPOSITE = {
    "up": "down",
    "down": "up",
    "left": "right",
    "right": "left",
    "upleft": "downright",
    "downright": "upleft",
    "upright": "downleft",
    "downleft": "upright",
}


def solve(observation: dict[str, Any]) -> list[str]:
    grid = observation["grid"]
    rows, cols = observation["rows"], observation["cols"]
    limit = observation["carry_limit"]
    cost = observation["cost_per_step"]
    budget = observation.get("actions_left", observation["max_actions"])
    start = observation["start"][0] * cols + observation["start"][1]
    position = observation.get("position", observation["start"])
    here = position[0] * cols + position[1]
    carrying = observation.get("carrying", 0)
    energy = {r * cols + c for r, c in observation["energy"]} - {start}

    # Cells are numbered r * cols + c; neighbours[cell] lists (action, next cell).
    neighbours: list[list[tuple[str, int]]] = [[] for _ in range(rows * cols)]
    for r in range(rows):
        for c in range(cols):
            if grid[r][c] == "O":
                continue
            for name in observation["actions"]:
                if name in OFFSETS:
                    nr, nc = r + OFFSETS[name][0], c + OFFSETS[name][1]
                    if 0 <= nr < rows and 0 <= nc < cols and grid[nr][nc] != "O":
                        neighbours[r * cols + c].append((name, nr * cols + nc))

    def bfs(source: int) -> tuple[list[int], list[int], list[str]]:
        """Distance (-1 unreachable), parent cell and the step into each cell."""
        distance = [-1] * (rows * cols)
        parent = [-1] * (rows * cols)
        step = [""] * (rows * cols)
        distance[source] = 0
        queue = deque([source])
        while queue:
            cell = queue.popleft()
            for name, nxt in neighbours[cell]:
                if distance[nxt] < 0:
                    distance[nxt] = distance[cell] + 1
                    parent[nxt] = cell
                    step[nxt] = name
                    queue.append(nxt)
        return distance, parent, step

    def path(tree: tuple[list[int], list[int], list[str]], cell: int) -> list[str]:
        _, parent, step = tree
        steps = []
        while parent[cell] >= 0:
            steps.append(step[cell])
            cell = parent[cell]
        return steps[::-1]

    home = bfs(start)
    plan: list[str] = []
    while True:
        tree = bfs(here)
        distance = tree[0]
        chosen = None
        for d, cell in sorted((distance[e], e) for e in energy if distance[e] >= 0):
            needed = d + 1 + home[0][cell] + 1
            if len(plan) + needed <= budget and cost * (d + 1) < 1:
                chosen = cell
                break
        if chosen is None:
            break
        plan += [*path(tree, chosen), "take"]
        energy.discard(chosen)
        here, carrying = chosen, carrying + 1
        if carrying >= limit:
            plan += [OPPOSITE[a] for a in reversed(path(home, here))] + ["drop"]
            here, carrying = start, 0
    if carrying:
        plan += [OPPOSITE[a] for a in reversed(path(home, here))] + ["drop"]
    return plan[:budget]


def act(observation: dict[str, Any]) -> str | None:
    """Closed-loop form: replan from the current state and take the first action."""
    plan = solve(observation)
    return plan[0] if plan else None
