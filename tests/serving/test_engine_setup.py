"""The AMX permission request that keeps vLLM's CPU kernels from dying of SIGILL."""

import importlib.metadata
import platform

import pytest

from amortized.serving.engine_setup import has_amx, request_amx_permission


def test_registered_for_every_vllm_process() -> None:
    values = [e.value for e in importlib.metadata.entry_points(group="vllm.general_plugins")]
    assert "amortized.serving.engine_setup:register" in values


def test_permission_is_granted_where_the_cpu_has_amx() -> None:
    if platform.machine() != "x86_64" or not has_amx():
        assert request_amx_permission() is False
        pytest.skip("no AMX on this CPU: nothing to request")
    assert request_amx_permission() is True
    assert request_amx_permission() is True  # asking again is harmless


def test_structural_tags_lose_free_whitespace_and_keep_their_meaning() -> None:
    import json

    import xgrammar as xgr

    from amortized.serving.tool_call_whitespace import without_free_whitespace

    schema = {
        "type": "object",
        "properties": {"columns": {"type": "array", "items": {"type": "string"}, "minItems": 2}},
        "required": ["columns"],
        "additionalProperties": False,
    }
    begin = '<tool_call>\n{"name": "t", "arguments": '
    tag = {
        "type": "structural_tag",
        "format": {
            "type": "triggered_tags",
            "triggers": ["<tool_call>"],
            "tags": [
                {
                    "type": "tag",
                    "begin": begin,
                    "content": {"type": "json_schema", "json_schema": schema},
                    "end": "}\n</tool_call>",
                }
            ],
            "at_least_one": True,
            "stop_after_first": True,
        },
    }
    rewritten = json.loads(without_free_whitespace(json.dumps(tag)))
    content = rewritten["format"]["tags"][0]["content"]
    assert content["type"] == "grammar"
    assert without_free_whitespace("not json") == "not json"
    assert without_free_whitespace('{"structures": []}') == '{"structures": []}'

    # A made-up vocabulary of single characters is enough to run the grammar.
    info = xgr.TokenizerInfo([f"<{i}>" for i in range(16)] + list('{}[],:"abcn \nt<>/_ltoe'))
    compiled = xgr.GrammarCompiler(info).compile_structural_tag(json.dumps(rewritten))
    compact = begin + '{"columns":["a","b"]}}\n</tool_call>'
    spaced = begin + '{\n "columns": ["a", "b"]}}\n</tool_call>'
    too_few = begin + '{"columns":["a"]}}\n</tool_call>'
    assert xgr.GrammarMatcher(compiled).accept_string(compact)
    assert not xgr.GrammarMatcher(compiled).accept_string(spaced)
    assert not xgr.GrammarMatcher(compiled).accept_string(too_few)
