"""The toolkit, its OpenAI schemas, the tool-calling loop, the CLI and the MCP server: offline
checks of schemas and error handling, then the real loop and MCP over stdio against the live
vLLM server with the tiny model."""

import json
import subprocess
import sys

import openai
import pytest
from langchain_core.tools import BaseTool
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from pydantic import BaseModel

from amortized.agents import AmortizedToolkit, openai_tool_schemas
from amortized.agents.loop import call_tool, run_agent
from amortized.agents.mcp_server import build_mcp_server
from amortized.agents.toolkit import tools_by_name
from amortized.errors import AmortizedError
from amortized.serving.process import ServerProcess, free_port
from tests.conftest import API_KEY

ALL_TOOLS = {"tabular_predict", "grid_plan", "think_while_listening_chat", "amortized_server_info"}
SMALL_KIT = ["realtime"]
"""The tiny model's 2,048-token context holds the schemas of these tools, not all of them."""


def whitespace_bias(tokenizer_dir: str) -> dict[str, int]:
    """Forbid whitespace tokens. A random tiny model loves whitespace, and vLLM's tool-call
    grammar (hermes structural tag) does not limit it, so a call would never end."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    blank = [i for i in range(len(tokenizer)) if str(tokenizer.decode([i])).isspace()]
    assert blank
    return {str(i): -100 for i in blank}


def unreachable_kit() -> AmortizedToolkit:
    return AmortizedToolkit(base_url=f"http://127.0.0.1:{free_port()}/v1", timeout=5)


def test_toolkit_offers_a_tool_per_capability_plus_server_info():
    tools = AmortizedToolkit().get_tools()
    assert {t.name for t in tools} == ALL_TOOLS
    for tool in tools:
        assert isinstance(tool, BaseTool)
        assert isinstance(tool.args_schema, type)
        assert issubclass(tool.args_schema, BaseModel)
        assert tool.handle_tool_error is True
        assert tool.description
    by_name = tools_by_name(tools)
    for name in ("tabular_predict", "grid_plan", "amortized_server_info"):
        assert by_name[name].response_format == "content_and_artifact"


def test_capability_filter_and_its_errors():
    kit = AmortizedToolkit(capabilities=["tabular"], include_info=False)
    assert [t.name for t in kit.get_tools()] == ["tabular_predict"]
    with pytest.raises(ValueError, match="no tool for capabilities kv_prediction"):
        AmortizedToolkit(capabilities=["kv_prediction"])


def test_openai_schemas_are_the_args_schemas():
    tools = AmortizedToolkit().get_tools()
    for tool, schema in zip(tools, openai_tool_schemas(tools), strict=True):
        assert schema["type"] == "function"
        function = schema["function"]
        assert function["name"] == tool.name
        assert function["parameters"]["type"] == "object"
        assert tool.args_schema is not None
        declared = tool.args_schema.model_json_schema().get("properties", {})  # type: ignore[union-attr]
        assert set(function["parameters"].get("properties", {})) == set(declared)
        json.dumps(schema)  # plain JSON, ready for `tools=`
    for schema in openai_tool_schemas(tools, strict=True):
        parameters = schema["function"]["parameters"]
        assert schema["function"]["strict"] is True
        assert parameters["additionalProperties"] is False
        assert set(parameters.get("required", [])) == set(parameters.get("properties", {}))


async def test_bad_calls_become_error_results_not_exceptions():
    tools = tools_by_name(unreachable_kit().get_tools())
    unknown = await call_tool(tools, "1", "delete_everything", "{}")
    assert unknown.error
    assert "no tool 'delete_everything'" in unknown.content
    broken = await call_tool(tools, "2", "tabular_predict", '{"train": [')
    assert broken.error
    assert "not valid JSON" in broken.content
    not_object = await call_tool(tools, "3", "tabular_predict", "[1, 2]")
    assert not_object.error
    assert "JSON object" in not_object.content
    invalid = await call_tool(
        tools,
        "4",
        "tabular_predict",
        {"columns": ["a", "y"], "train": [[1, "u"]], "test": [[2]], "target": "y"},
    )
    assert invalid.error
    assert "train" in invalid.content
    down = await call_tool(tools, "5", "amortized_server_info", {})
    assert down.error
    assert "cannot connect" in down.content


async def test_mcp_server_in_process_lists_tools_and_reports_failures():
    tools = unreachable_kit().get_tools()
    async with Client(build_mcp_server(tools)) as client:
        listed = await client.list_tools()
        assert {t.name for t in listed.tools} == ALL_TOOLS
        schemas = {s["function"]["name"]: s["function"] for s in openai_tool_schemas(tools)}
        for tool in listed.tools:
            assert tool.input_schema == schemas[tool.name]["parameters"]
        for tool in listed.tools:
            assert tool.output_schema is not None, tool.name
            assert tool.output_schema.get("type") == "object", tool.name
            assert tool.annotations is not None, tool.name
            assert tool.annotations.open_world_hint is False
        hints = {t.name: t.annotations.read_only_hint for t in listed.tools if t.annotations}
        assert hints == {
            "tabular_predict": True,
            "grid_plan": False,  # a validated program goes into the library
            "think_while_listening_chat": True,
            "amortized_server_info": True,
        }
        failed = await client.call_tool("amortized_server_info", {})
        assert failed.is_error
        assert "cannot connect" in failed.content[0].text  # type: ignore[union-attr]
        assert failed.structured_content is not None
        assert "cannot connect" in failed.structured_content["error"]["message"]
        bad = await client.call_tool("think_while_listening_chat", {"message": ""})
        assert bad.is_error


def test_agent_cli_bad_input_is_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "amortized", "agent", "run", "hi", "--tools", "kv_prediction"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "no tool for capabilities kv_prediction" in done.stderr


@pytest.mark.server
async def test_forced_call_reaches_the_tool_and_its_result_reaches_the_model(
    live_server: ServerProcess, tiny_llama
):
    kit = AmortizedToolkit(base_url=live_server.base_url, api_key=API_KEY, capabilities=SMALL_KIT)
    client = openai.AsyncOpenAI(base_url=live_server.base_url, api_key=API_KEY)
    try:
        run = await run_agent(
            "What can this server do?",
            kit.get_tools(),
            client=client,
            force_tool="amortized_server_info",
            tool_choice="none",
            max_tokens=96,
            # prompt_logprobs returns every prompt token of each call, so the test can read
            # what the model was actually given.
            extra_body={"prompt_logprobs": 0, "logit_bias": whitespace_bias(tiny_llama.path)},
        )
    finally:
        await client.close()
    assert run.stopped == "answer"
    assert run.answer is not None
    [call] = run.calls
    assert call.name == "amortized_server_info"
    assert json.loads(call.arguments) == {}
    assert not call.error
    # The real route answered: the served model and the server's capabilities.
    assert call.artifact["models"][0]["id"] == "tiny"
    assert "models: tiny" in call.content
    assert "capabilities: kv_prediction, realtime, planners, tabular" in call.content
    # The tool result is in the prompt the model read for its final answer.
    assert [m["role"] for m in run.messages] == ["user", "assistant", "tool", "assistant"]
    final_prompt = run.responses[-1].model_extra["prompt_logprobs"]
    read = "".join(next(iter(t.values()))["decoded_token"] for t in final_prompt if t)
    assert f"<tool_response>\n{call.content}\n</tool_response>" in read
    assert run.responses[-1].usage.prompt_tokens > run.responses[0].usage.prompt_tokens


@pytest.mark.server
async def test_loop_errors_say_what_to_fix(live_server: ServerProcess):
    kit = AmortizedToolkit(base_url=live_server.base_url, api_key=API_KEY, capabilities=SMALL_KIT)
    client = openai.AsyncOpenAI(base_url=live_server.base_url, api_key=API_KEY)
    try:
        with pytest.raises(AmortizedError, match="no tool 'nope'"):
            await run_agent("hi", kit.get_tools(), client=client, force_tool="nope")
        # Too few tokens to finish the forced call: said, not taken for an answer.
        with pytest.raises(AmortizedError, match="did not complete the forced call"):
            await run_agent(
                "hi", kit.get_tools(), client=client, force_tool="amortized_server_info",
                max_tokens=3,
            )  # fmt: skip
    finally:
        await client.close()


@pytest.mark.server
def test_agent_cli_runs_a_forced_call(live_server: ServerProcess, tiny_llama):
    bias = json.dumps(whitespace_bias(tiny_llama.path))
    argv = [
        "agent", "run", "What can this server do?", "--base-url", live_server.base_url,
        "--api-key", API_KEY, "--tools", "realtime", "--force-tool", "amortized_server_info",
        "--tool-choice", "none", "--max-tokens", "96", "--logit-bias", bias, "--json",
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "amortized", *argv], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["stopped"] == "answer"
    assert [c["name"] for c in result["calls"]] == ["amortized_server_info"]
    assert "models: tiny" in result["calls"][0]["content"]
    assert "tool amortized_server_info [ok]" in done.stderr


@pytest.mark.server
async def test_mcp_over_stdio_lists_and_calls_every_tool(live_server: ServerProcess, tmp_path):
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "amortized", "mcp", "--base-url", live_server.base_url, "--api-key", API_KEY],
    )
    async with Client(params, read_timeout_seconds=600) as client:
        listed = await client.list_tools()
        assert {t.name for t in listed.tools} == ALL_TOOLS

        info = await client.call_tool("amortized_server_info", {})
        assert not info.is_error
        assert info.structured_content is not None
        assert info.structured_content["models"][0]["id"] == "tiny"

        chat = await client.call_tool("think_while_listening_chat", {"message": "Hello there"})
        assert not chat.is_error, chat.content
        assert chat.content[0].type == "text"

        rows = [[float(i), "low" if i < 4 else "high"] for i in range(8)]
        tabular = await client.call_tool(
            "tabular_predict",
            {"columns": ["x", "y"], "target": "y", "train": rows, "test": [[1.5], [6.5]]},
        )
        assert not tabular.is_error, tabular.content
        assert tabular.structured_content is not None
        predictions = tabular.structured_content["predictions"]
        assert len(predictions) == 2
        assert {p["label"] for p in predictions} <= {"low", "high"}

        plan = await client.call_tool(
            "grid_plan",
            # A task no other test plans, so no stored program is reused.
            {"env": "GRASP", "movement": 8, "carry_limit": 3, "count": 2, "max_tokens": 60000},
        )
        assert not plan.is_error, plan.content
        assert plan.structured_content is not None
        assert plan.structured_content["signature"] == "GRASP/move8-carry3-cost0"
        assert plan.structured_content["status"] in ("planned", "no_program")
        assert plan.structured_content["rounds"]

        refused = await client.call_tool("tabular_predict", {"train": [], "test": [], "target": ""})
        assert refused.is_error


@pytest.mark.server
async def test_langchain_chat_model_uses_the_tools_without_adapter_code(
    live_server: ServerProcess, tiny_llama
):
    from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    tools = AmortizedToolkit(
        base_url=live_server.base_url, api_key=API_KEY, capabilities=SMALL_KIT
    ).get_tools()
    model = ChatOpenAI(
        model="tiny",
        base_url=live_server.base_url,
        api_key=API_KEY,  # type: ignore[arg-type]
        max_completion_tokens=96,
        temperature=0,
        logit_bias=whitespace_bias(tiny_llama.path),  # type: ignore[arg-type]
    )
    forced = model.bind_tools(tools, tool_choice="amortized_server_info", strict=True)
    messages: list[BaseMessage] = [HumanMessage("What can this server do?")]
    reply = await forced.ainvoke(messages)
    [tool_call] = reply.tool_calls
    assert tool_call["name"] == "amortized_server_info"
    result = await tools_by_name(tools)[tool_call["name"]].ainvoke(tool_call)
    assert isinstance(result, ToolMessage)
    assert result.tool_call_id == tool_call["id"]
    assert "models: tiny" in result.text
    assert result.artifact["models"][0]["id"] == "tiny"
    final = await model.bind_tools(tools, tool_choice="none").ainvoke([*messages, reply, result])
    assert isinstance(final.content, str)
    assert final.usage_metadata is not None
    assert reply.usage_metadata is not None
    assert final.usage_metadata["input_tokens"] > reply.usage_metadata["input_tokens"]


@pytest.mark.server
async def test_toolkit_from_server_offers_the_enabled_capabilities(live_server: ServerProcess):
    kit = await AmortizedToolkit.from_server(live_server.base_url, API_KEY)
    assert {t.name for t in kit.get_tools()} == ALL_TOOLS
    with pytest.raises(AmortizedError, match="refused the API key"):
        await AmortizedToolkit.from_server(live_server.base_url, "wrong-key")
    with pytest.raises(AmortizedError, match="cannot connect"):
        await AmortizedToolkit.from_server(f"http://127.0.0.1:{free_port()}/v1")
