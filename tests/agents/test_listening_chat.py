"""The client helper, the LangChain runnable and the tool against the real server."""

import pytest
from langchain_core.tools import ToolException

from amortized.agents import ListeningChat, ListeningChatTool, RealtimeSession
from amortized.agents.realtime import realtime_url
from amortized.serving.process import ServerProcess
from tests.conftest import API_KEY, LIVE_MAX_MODEL_LEN

pytestmark = pytest.mark.server


def test_realtime_url() -> None:
    assert realtime_url("http://h:1/v1") == "ws://h:1/v1/amortized/realtime"
    assert realtime_url("https://h/") == "wss://h/v1/amortized/realtime"


async def test_answer_iterates_deltas(live_server: ServerProcess) -> None:
    async with RealtimeSession(live_server.root_url, API_KEY) as rt:
        await rt.append("Hello")
        await rt.append(" friend")
        await rt.commit()
        deltas = [d async for d in rt.answer()]
    done = [e for e in rt.events if e["type"] == "response.done"][-1]
    assert deltas
    assert "".join(deltas) == done["response"]["output_text"]


async def test_runnable_streams_and_invokes(live_server: ServerProcess) -> None:
    chat = ListeningChat(
        live_server.base_url,
        API_KEY,
        words_per_second=50,
        session={"answer": {"max_tokens": 8, "temperature": 0}, "thinking": {"temperature": 0}},
    )
    pieces = [p async for p in chat.astream("Tell me a story")]
    assert pieces
    again = await chat.ainvoke(["Tell", " me", " a", " story"])
    assert isinstance(again, str)
    assert again
    assert len("".join(pieces)) > 0


async def test_tool_returns_the_answer_and_reports_errors(live_server: ServerProcess) -> None:
    tool = ListeningChatTool(
        base_url=live_server.base_url, api_key=API_KEY, session={"answer": {"max_tokens": 6}}
    )
    answer = await tool.ainvoke({"message": "Hi there"})
    assert isinstance(answer, str)
    assert answer
    too_long = await tool.ainvoke({"message": "word " * (LIVE_MAX_MODEL_LEN + 100)})
    assert "context_length_exceeded" in too_long
    with pytest.raises(ToolException):
        await tool._arun("word " * (LIVE_MAX_MODEL_LEN + 100))
