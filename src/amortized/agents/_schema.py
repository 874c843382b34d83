"""Short JSON schemas for tool arguments: a model reads them in every prompt.

Pydantic spells an optional ``int`` as ``anyOf: [{type: integer}, {type: null}]`` with
``default: null`` and a ``title`` per field; a type list says the same in a third of the
tokens, and OpenAI's strict mode accepts it. The pydantic model still validates each call.
"""

from typing import Any

_DROPPED = frozenset({"title", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
"""Numeric bounds stay in the pydantic model, which checks every call; the model reading
the schema does not need them."""


def _compact(node: Any) -> Any:
    if isinstance(node, list):
        return [_compact(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _compact(v) for k, v in node.items() if k not in _DROPPED}
    if "default" in out and out["default"] is None:
        del out["default"]
    options = out.get("anyOf")
    if isinstance(options, list) and all(set(o) == {"type"} for o in options):
        out = {k: v for k, v in out.items() if k != "anyOf"} | {
            "type": [o["type"] for o in options]
        }
    elif isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
        other = next(o for o in options if o != {"type": "null"})
        if isinstance(other.get("type"), str):
            rest = {k: v for k, v in out.items() if k != "anyOf"}
            out = {**other, **rest, "type": [other["type"], "null"]}
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
    return out


def compact_schema(model: Any) -> dict[str, Any]:
    """The JSON schema of ``model`` (a pydantic model class, or a schema already) without
    titles, numeric bounds, null defaults and ``anyOf`` where a type list says it."""
    raw = model if isinstance(model, dict) else model.model_json_schema()
    schema: dict[str, Any] = _compact(raw)
    return schema
