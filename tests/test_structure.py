"""The package's import graph: no cycles (module-level imports; imports inside functions are
lazy on purpose and left out), and the dependency directions CONTRIBUTING.md states (every
import, lazy ones included)."""

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"


CAPABILITY_PACKAGES = ("kv_prediction", "tabular", "planners", "steering", "models", "llm")
"""Core packages: they never import the server or the HTTP clients (those import them)."""


def module_graph(*, lazy: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules it imports; ``lazy`` adds imports inside functions."""
    modules: dict[str, Path] = {}
    for path in SOURCE.rglob("*.py"):
        name = ".".join(path.relative_to(SOURCE).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree) if lazy else tree.body:
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            graph[name].update(t for t in targets if t in graph and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles() -> None:
    assert cycles(module_graph()) == []


def package_of(module: str) -> str:
    """``amortized.tabular.job`` -> ``tabular``; the top-level package -> ``""``."""
    return module.split(".")[1] if "." in module else ""


def test_dependency_directions() -> None:
    graph = module_graph(lazy=True)
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if (
            package_of(module) in CAPABILITY_PACKAGES
            and package_of(target) in ("serving", "agents")
        )
        or (package_of(module) != "testing" and package_of(target) == "testing")
    )
    assert wrong == []


def test_the_graph_sees_lazy_imports() -> None:
    eager, lazy = module_graph(), module_graph(lazy=True)
    assert "amortized.kv_prediction.cli" not in eager["amortized.cli"]
    assert "amortized.kv_prediction.cli" in lazy["amortized.cli"]


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
