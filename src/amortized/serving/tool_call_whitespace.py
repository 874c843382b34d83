"""Forced tool calls without free whitespace, as ``disable_any_whitespace`` promises.

vLLM constrains a forced tool call with an xgrammar structural tag whose arguments are a JSON
schema element, and xgrammar compiles that element with any whitespace allowed: the
``disable_any_whitespace`` setting (which ``amortized serve`` turns on) reaches JSON modes but
not tool calls. A small model then writes newlines and spaces until ``max_tokens`` (SmolLM2
did, on every forced call). Here each JSON-schema element of a structural tag becomes the
equivalent grammar compiled without whitespace, before xgrammar sees it. It patches one vLLM
method, only when that setting is on, and leaves the spec unchanged when anything is unknown.
"""

import functools
import json
import logging
from typing import Any

logger = logging.getLogger(__name__)


def _compact_json_grammar(schema: Any) -> str:
    import xgrammar as xgr

    text = schema if isinstance(schema, str) else json.dumps(schema)
    grammar = xgr.Grammar.from_json_schema(text, any_whitespace=False, separators=(",", ":"))
    return str(grammar)


def _rewrite(node: Any) -> Any:
    if isinstance(node, list):
        return [_rewrite(item) for item in node]
    if not isinstance(node, dict):
        return node
    is_json_element = node.get("type") == "json_schema" and node.get("style", "json") == "json"
    if is_json_element and isinstance(node.get("json_schema"), dict):
        return {"type": "grammar", "grammar": _compact_json_grammar(node["json_schema"])}
    return {key: _rewrite(value) for key, value in node.items()}


def without_free_whitespace(spec: str) -> str:
    """A structural tag spec whose JSON elements allow no whitespace between tokens."""
    try:
        tag = json.loads(spec)
    except ValueError:
        return spec
    if not isinstance(tag, dict) or "format" not in tag:
        return spec  # the deprecated "structures" form, or something new: leave it be
    try:
        return json.dumps(_rewrite(tag))
    except Exception as error:  # never worse than vLLM's own behaviour
        logger.warning("kept a structural tag as it was: %s", error)
        return spec


def install() -> bool:
    """Patch vLLM's xgrammar backend; False when this vLLM has no such method."""
    try:
        from vllm.v1.structured_output import backend_xgrammar
        from vllm.v1.structured_output.backend_types import StructuredOutputOptions
    except ImportError:
        return False
    backend = getattr(backend_xgrammar, "XgrammarBackend", None)
    original = getattr(backend, "compile_grammar", None)
    if backend is None or original is None or getattr(original, "_amortized", False):
        return False

    @functools.wraps(original)
    def compile_grammar(
        self: Any, request_type: Any, grammar_spec: str, *args: Any, **kwargs: Any
    ) -> Any:
        if request_type == StructuredOutputOptions.STRUCTURAL_TAG and getattr(
            self, "disable_any_whitespace", False
        ):
            grammar_spec = without_free_whitespace(grammar_spec)
        return original(self, request_type, grammar_spec, *args, **kwargs)

    compile_grammar._amortized = True  # type: ignore[attr-defined]
    backend.compile_grammar = compile_grammar
    return True
