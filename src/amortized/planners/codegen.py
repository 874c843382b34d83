"""Getting a policy program out of an LLM reply: fences, prose and truncation tolerated."""

from __future__ import annotations

import ast
import re

from amortized.errors import AmortizedError

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_START = re.compile(r"^(?:from\s+\w|import\s+\w|def\s+\w|class\s+\w|@|[A-Z_][A-Z0-9_]*\s*=)")


class NoProgramError(AmortizedError):
    """The reply holds no parseable Python defining the entrypoint."""


def _defines(tree: ast.Module, name: str) -> bool:
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name
        for node in tree.body
    )


def _parse_prefix(code: str, entrypoint: str) -> str | None:
    """The longest prefix of ``code`` (by lines) that parses and defines ``entrypoint``.

    A reply cut off by ``max_tokens`` or trailed by prose still yields its complete part.
    """
    lines = code.rstrip().splitlines()
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end]).rstrip() + "\n"
        try:
            tree = ast.parse(candidate)
        except SyntaxError:
            continue
        if _defines(tree, entrypoint):
            return candidate
    return None


def extract_program(reply: str, entrypoint: str = "solve") -> str:
    """The Python source in ``reply`` that defines ``entrypoint``.

    Fenced blocks come first (``python``-tagged before untagged, the last defining the
    entrypoint wins, as models tend to end with their final version); otherwise the text
    from the first line that looks like code. Raises :class:`NoProgramError`.
    """
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(reply)]
    ordered = [b for lang, b in blocks if lang in {"python", "py", "python3"}]
    ordered += [b for lang, b in blocks if lang == ""]
    for body in reversed(ordered):
        found = _parse_prefix(body, entrypoint)
        if found is not None:
            return found
    lines = reply.splitlines()
    for start, line in enumerate(lines):
        if _CODE_START.match(line):
            found = _parse_prefix("\n".join(lines[start:]), entrypoint)
            if found is not None:
                return found
    snippet = " ".join(reply.split())[:120]
    raise NoProgramError(
        f"the reply defines no parseable `{entrypoint}` function "
        f"({len(reply)} characters: {snippet!r})"
    )
