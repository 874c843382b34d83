"""The toolkit with the default served model, SmolLM2-135M-Instruct, as users run it: the
schemas fit its context, strict forced calls give valid non-empty arguments for every tool,
and both `amortized agent run` and a stock LangGraph ReAct agent complete a task."""

import json
import subprocess
from typing import Any

import httpx
import pytest
from langchain_core.tools import BaseTool

from amortized.agents import AmortizedToolkit, openai_tool_schemas
from amortized.serving.process import ServerProcess
from tests.conftest import AMORTIZED, API_KEY, SMOLLM2

pytestmark = pytest.mark.server

TOOL_TOKEN_BUDGET = 1000
"""Issue 20: all tools together, in the served model's own tokens."""
DEFAULT_CONTEXT = 2048
"""`amortized serve`'s context for SmolLM2 on CPU (the fixture's server allows more)."""
QUESTION = [{"role": "user", "content": "Which models does this server serve?"}]
REQUESTS = {
    "tabular_predict": 'Predict size. Columns ["height", "size"], target "size", train '
    '[[1, "small"], [2, "small"], [9, "big"], [10, "big"]], test [[1.5], [9.5]].',
    "grid_plan": "Solve 3 GRASP grids with 8 moves.",
    "think_while_listening_chat": "Ask the model what the capital of France is.",
    "amortized_server_info": "Which models does this server serve?",
}


def toolkit(server: ServerProcess) -> list[BaseTool]:
    return AmortizedToolkit(base_url=server.base_url, api_key=API_KEY).get_tools()


def prompt_tokens(server: ServerProcess, tools: list[dict[str, Any]] | None) -> int:
    body: dict[str, Any] = {"model": SMOLLM2, "messages": QUESTION}
    if tools:
        body["tools"] = tools
    reply = httpx.post(
        f"{server.root_url}/tokenize",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    return int(reply.json()["count"])


@pytest.mark.parametrize("strict", [False, True], ids=["plain", "strict"])
def test_every_tool_together_fits_in_1000_tokens(
    smollm2_server: ServerProcess, strict: bool
) -> None:
    schemas = openai_tool_schemas(toolkit(smollm2_server), strict=strict)
    cost = prompt_tokens(smollm2_server, schemas) - prompt_tokens(smollm2_server, None)
    assert 0 < cost <= TOOL_TOKEN_BUDGET, cost


@pytest.mark.parametrize("name", list(REQUESTS))
def test_a_forced_strict_call_gives_valid_nonempty_arguments(
    smollm2_server: ServerProcess, name: str
) -> None:
    import openai

    tools = {tool.name: tool for tool in toolkit(smollm2_server)}
    tool = tools[name]
    schema = openai_tool_schemas([tool], strict=True)[0]
    client = openai.OpenAI(base_url=smollm2_server.base_url, api_key=API_KEY)
    request: Any = {
        "messages": [{"role": "user", "content": REQUESTS[name]}],
        "tools": [schema],
        "tool_choice": {"type": "function", "function": {"name": name}},
    }
    reply = client.chat.completions.create(model=SMOLLM2, max_tokens=600, temperature=0, **request)
    choice = reply.choices[0]
    assert choice.finish_reason != "length", "the arguments never ended"
    calls = choice.message.tool_calls or []
    assert len(calls) == 1
    arguments = json.loads(calls[0].function.arguments)
    validated: Any = tool.args_schema.model_validate(arguments)  # type: ignore[union-attr]
    if name == "tabular_predict":
        assert len(validated.train) >= 2
        assert len(validated.test) >= 1
        assert all(validated.train)
        assert all(validated.test)
    elif name == "grid_plan":
        assert validated.env
    elif name == "think_while_listening_chat":
        assert validated.message.strip()


def test_json_modes_finish_without_client_tricks(smollm2_server: ServerProcess) -> None:
    import openai
    from pydantic import BaseModel

    class Capital(BaseModel):
        country: str
        capital: str

    client = openai.OpenAI(base_url=smollm2_server.base_url, api_key=API_KEY)
    question: Any = [{"role": "user", "content": "What is the capital of France? Answer in JSON."}]
    parsed = client.chat.completions.parse(
        model=SMOLLM2, messages=question, response_format=Capital, max_tokens=200, temperature=0
    )
    choice = parsed.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, Capital)
    loose = client.chat.completions.create(
        model=SMOLLM2,
        messages=question,
        response_format={"type": "json_object"},
        max_tokens=200,
        temperature=0,
    )
    assert loose.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(loose.choices[0].message.content or ""), dict)


def test_agent_cli_answers_which_models(smollm2_server: ServerProcess) -> None:
    done = subprocess.run(
        [*AMORTIZED, "agent", "run", "Which models does this server serve?",
         "--base-url", smollm2_server.base_url, "--api-key", API_KEY, "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["stopped"] == "answer", result
    assert result["answer"], result
    assert result["prompt_tokens"][0] < DEFAULT_CONTEXT - 256  # room left to answer


async def test_a_stock_langgraph_react_agent_runs_the_whole_toolkit(
    smollm2_server: ServerProcess,
) -> None:
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_openai import ChatOpenAI
    from langgraph.prebuilt import create_react_agent

    model = ChatOpenAI(
        base_url=smollm2_server.base_url,
        api_key=API_KEY,  # type: ignore[arg-type]
        model=SMOLLM2,
        temperature=0,
        max_tokens=200,  # type: ignore[call-arg]
    )
    agent = create_react_agent(model, toolkit(smollm2_server))
    state = await agent.ainvoke(
        {"messages": [HumanMessage("Which models does this server serve?")]},
        {"recursion_limit": 8},
    )
    messages = state["messages"]
    assert isinstance(messages[-1], AIMessage)
    first = next(m for m in messages if isinstance(m, AIMessage))
    usage = first.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] < DEFAULT_CONTEXT - 256
