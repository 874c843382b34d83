"""The real model through ``amortized serve smollm2-135m-instruct`` and the official clients:
chat, streaming, tool calls through vLLM's hermes parser, KV prediction and a realtime
(think-while-listening) session. What a 135M model can and cannot show: docs/models.md."""

import json
import shlex
import subprocess
from typing import Any

import httpx
import openai
import pytest

from amortized.agents.realtime import RealtimeSession
from amortized.serving.process import ServerProcess
from tests.conftest import API_KEY, SMOLLM2, SMOLLM2_KVP_MIN_TOKENS, smollm2_engine_log

pytestmark = pytest.mark.server

FACTS = [
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is 2 + 2?", "4"),
]

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "the city name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}


def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=API_KEY)


def ask(server: ServerProcess, question: str, **kw: Any) -> Any:
    return client(server).chat.completions.create(
        model=SMOLLM2,
        messages=[{"role": "user", "content": question}],
        max_tokens=24,
        temperature=0,
        **kw,
    )


@pytest.mark.parametrize(("question", "answer"), FACTS)
def test_factual_questions_get_the_right_answer(smollm2_server, question, answer):
    reply = ask(smollm2_server, question)
    assert answer in (reply.choices[0].message.content or ""), reply.choices[0].message
    assert reply.model == SMOLLM2


def test_streaming_gives_the_same_answer_as_a_whole_reply(smollm2_server):
    question = "Name three colours of the rainbow."
    whole = ask(smollm2_server, question).choices[0].message.content
    stream = client(smollm2_server).chat.completions.create(
        model=SMOLLM2,
        messages=[{"role": "user", "content": question}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert len(pieces) > 3
    assert "".join(pieces) == whole
    assert usage is not None
    assert usage.completion_tokens > 3


def test_served_in_the_measured_dtype_with_its_name(smollm2_server):
    info = httpx.get(
        f"{smollm2_server.base_url}/amortized/info",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    ).json()
    assert [m["id"] for m in info["models"]] == [SMOLLM2]
    log = smollm2_engine_log(smollm2_server).read_text(errors="replace")
    assert "dtype=torch.float32" in log
    assert "tool_chat_template.jinja" in log


def test_the_console_shows_progress_and_examples_that_answer(smollm2_server):
    """What `make run` prints: a few lines, not the engine's log, and a printed openai
    command that answers the example question correctly."""
    console = smollm2_server.log_path.read_text(errors="replace")
    engine_log = smollm2_engine_log(smollm2_server)
    assert f"engine log: {engine_log}" in console
    assert "INFO" not in console, console
    assert "WARNING" not in console, console
    assert len(console.strip().splitlines()) <= 12, console
    assert f"serving '{SMOLLM2}'" in console
    command = next(line for line in console.splitlines() if " -c " in line)
    done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout, done.stdout
    assert "Starting vLLM server on" in engine_log.read_text(errors="replace")


def test_a_required_tool_call_comes_back_parsed_and_valid(smollm2_server):
    """Forced calls go through vLLM's hermes parser (structural tags), with strict arguments."""
    tool: Any = {**WEATHER_TOOL, "function": {**WEATHER_TOOL["function"], "strict": True}}
    reply = client(smollm2_server).chat.completions.create(
        model=SMOLLM2,
        messages=[{"role": "user", "content": "What is the weather in Paris, in celsius?"}],
        tools=[tool],
        tool_choice="required",
        max_tokens=64,
        temperature=0,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls: Any = choice.message.tool_calls or []
    assert len(calls) >= 1
    call = calls[0]
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"city", "unit"}
    assert arguments["unit"] in ("celsius", "fahrenheit")
    assert isinstance(arguments["city"], str)
    assert arguments["city"]


def test_auto_tool_choice_answers_in_text_or_a_valid_call(smollm2_server):
    """With ``auto`` the model decides; the 135M model was not trained to call tools, so it
    usually answers in text (docs/models.md). Either way the reply must be well formed."""
    reply = client(smollm2_server).chat.completions.create(
        model=SMOLLM2,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        max_tokens=48,
        temperature=0,
    )
    message = reply.choices[0].message
    calls: Any = message.tool_calls
    if calls:
        assert calls[0].function.name == "get_weather"
        json.loads(calls[0].function.arguments)
    else:
        assert message.content
        assert "<tool_call>" not in message.content


def test_opted_in_kv_prediction_answers_and_reports_the_predicted_span(smollm2_server):
    prompt = "Here is a list of fruits: " + ", ".join(["apple", "banana", "cherry"] * 12)
    kvp = {"kv_transfer_params": {"kv_prediction": True}}
    reply = client(smollm2_server).completions.create(
        model=SMOLLM2, prompt=prompt, max_tokens=8, temperature=0, extra_body=kvp
    )
    params = getattr(reply, "kv_transfer_params", None)
    assert reply.usage is not None
    assert reply.usage.prompt_tokens >= SMOLLM2_KVP_MIN_TOKENS
    assert params == {"kv_prediction": True, "predicted_tokens": reply.usage.prompt_tokens - 1}
    assert reply.choices[0].text
    plain = client(smollm2_server).completions.create(
        model=SMOLLM2, prompt=prompt, max_tokens=8, temperature=0
    )
    assert getattr(plain, "kv_transfer_params", None) is None


async def test_realtime_session_thinks_while_listening_then_answers(smollm2_server):
    """Each piece of the question gets its own thinking before the next arrives; the answer
    comes after the commit (the model's own words; docs/models.md says what 135M shows)."""
    settings = {
        "thinking": {"emit": True, "chunk_tokens": 8, "budget_tokens": 48},
        "answer": {"max_tokens": 24},
    }
    thought = []
    async with RealtimeSession(smollm2_server.root_url, API_KEY, session=settings) as rt:
        for index, chunk in enumerate(["What is the", " capital of", " France?"]):
            await rt.append(chunk)
            while (event := await rt.next_event(60))["type"] != "thinking.done":
                assert event["type"] != "error", event
            assert event["chunk_index"] == index
            thought.append(event["tokens"])
        await rt.commit()
        answer = await rt.collect()
    assert answer.status == "completed", answer
    assert all(0 < tokens <= 8 for tokens in thought), thought
    assert answer.text.strip(), answer
    assert answer.usage["thinking_tokens"] >= sum(thought)
