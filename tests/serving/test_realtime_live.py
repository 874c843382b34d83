"""Think-while-listening through the real server: WebSocket events, KV reuse, barge-in,
disconnects, bad input and the simulate route, on the session's tiny Llama."""

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from amortized.agents.realtime import RealtimeError, RealtimeSession, realtime_url
from amortized.serving.process import ServerProcess, running_requests
from tests.conftest import API_KEY, LIVE_MAX_MODEL_LEN

pytestmark = pytest.mark.server

THINK_EVERY_CHUNK = {
    "thinking": {"emit": True, "chunk_tokens": 6, "budget_tokens": 64},
    "answer": {"max_tokens": 16},
}
SHORT = {"answer": {"max_tokens": 8}}


LONG_ANSWER_TOKENS = 1200
"""Fits the live server's context twice over a short prompt (truncate keeps a partial one)."""
LONG_ANSWER: dict[str, Any] = {
    "answer": {"max_tokens": LONG_ANSWER_TOKENS, "min_tokens": LONG_ANSWER_TOKENS},
    "thinking": {"budget_tokens": 0},
}


def session(server: ServerProcess, settings: dict[str, Any] | None = None) -> RealtimeSession:
    return RealtimeSession(server.root_url, API_KEY, session=settings)


async def next_of(rt: RealtimeSession, kind: str, timeout: float = 30) -> dict[str, Any]:
    """Skip events until one of ``kind`` arrives (errors fail the test)."""
    while True:
        event = await rt.next_event(timeout)
        assert event["type"] != "error", event
        if event["type"] == kind:
            return event


async def answer_started(rt: RealtimeSession) -> None:
    """Wait for the answer's first text, for tests that need a running answer but no race."""
    await next_of(rt, "response.output_text.delta")


async def wait_idle(server: ServerProcess, timeout: float = 20) -> float:
    deadline = time.monotonic() + timeout
    while (running := running_requests(server.root_url)) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return running


async def test_thinks_between_chunks_and_answers_after_commit(live_server: ServerProcess) -> None:
    async with session(live_server, THINK_EVERY_CHUNK) as rt:
        chunks = [
            "Tell me about",
            " the weather we",
            " should expect today",
            " in the north of",
            " the country, in",
            " one long sentence",
        ]

        for index, chunk in enumerate(chunks):
            await rt.append(chunk)
            done = await next_of(rt, "thinking.done")
            assert done["chunk_index"] == index
            assert 0 < done["tokens"] <= 6
        await rt.commit()
        answer = await rt.collect()
    assert answer.status == "completed"
    usage = answer.usage
    assert usage["thinking_tokens"] == sum(
        e["tokens"] for e in rt.events if e["type"] == "thinking.done"
    )
    assert usage["output_tokens"] > 0
    assert answer.latency_ms is not None
    assert answer.latency_ms >= 0
    # KV reuse: each prompt extends the previous one; once the context passes 64 tokens
    # (by the fourth chunk) every request finds at least one 32-token block in the cache.
    assert usage["cached_tokens"] >= 3 * 32
    assert usage["cached_tokens"] % 32 == 0

    thinking = "".join(e["delta"] for e in rt.events if e["type"] == "thinking.delta")
    assert thinking, "emit=True must send thinking.delta events"
    assert "<think>" not in answer.text
    assert "</think>" not in answer.text
    for event in rt.events:
        if event["type"] == "thinking.delta" and len(event["delta"].strip()) >= 6:
            assert event["delta"] not in answer.text
    # Order: every chunk's thinking ends before the answer starts.
    kinds = [e["type"] for e in rt.events]
    assert kinds.index("response.created") > max(
        i for i, k in enumerate(kinds) if k == "thinking.done"
    )


async def test_thinking_deltas_are_off_by_default(live_server: ServerProcess) -> None:
    async with session(live_server, SHORT) as rt:
        assert rt.session["thinking"]["emit"] is False
        answer = await rt.ask(["Hello", " there"], words_per_second=2)
    assert answer.status == "completed"
    assert not any(e["type"] == "thinking.delta" for e in rt.events)
    assert answer.usage["thinking_tokens"] > 0


async def test_new_chunk_interrupts_thinking_and_commit_stops_it(
    live_server: ServerProcess,
) -> None:
    # The three events go out back to back and the server handles them in order, so each
    # one lands while the thinking it stops is running (1200 tokens take seconds here).
    settings = {"thinking": {"chunk_tokens": 1200, "min_tokens": 1200, "budget_tokens": 2000}}
    async with session(live_server, settings) as rt:
        await rt.append("First part")
        await rt.append(" second part")
        await rt.commit()
        first = await next_of(rt, "thinking.done")
        assert first["chunk_index"] == 0
        assert first["reason"] == "interrupted"
        assert first["tokens"] < 1200
        second = await next_of(rt, "thinking.done")
        assert second["chunk_index"] == 1
        assert second["reason"] == "end_of_turn", second
        assert second["tokens"] < 1200
        answer = await rt.collect()
    assert answer.status == "completed"


async def test_barge_in_cancels_the_answer_and_the_turn_continues(
    live_server: ServerProcess,
) -> None:
    # Commit and barge-in go out back to back: the server handles them in order, so the
    # barge-in always meets a running answer (waiting for a delta first lost that race to a
    # 1200-token answer on a loaded machine).
    async with session(live_server, LONG_ANSWER) as rt:
        await rt.append("Say something long")
        await rt.commit()
        await rt.append(" and short")
        done = await next_of(rt, "response.done")
        assert done["response"]["status"] == "cancelled", done
        assert done["response"]["usage"]["output_tokens"] < LONG_ANSWER_TOKENS
        await rt.commit()
        answer = await rt.collect()
        assert answer.status == "completed"
        # Cancel dropped the first answer, so the user's turn went on: same turn index.
        committed = [e for e in rt.events if e["type"] == "input_text_buffer.committed"]
        assert [e["turn_index"] for e in committed] == [0, 0]
        assert committed[1]["input_tokens"] > committed[0]["input_tokens"]


async def test_barge_in_truncate_keeps_the_partial_answer(live_server: ServerProcess) -> None:
    async with session(live_server, {**LONG_ANSWER, "barge_in": "truncate"}) as rt:
        await rt.append("Say something long")
        await rt.commit()
        await rt.append("Stop")
        done = await next_of(rt, "response.done")
        assert done["response"]["status"] == "incomplete", done
        partial = done["response"]["usage"]["output_tokens"]
        assert partial < LONG_ANSWER_TOKENS
        await rt.commit()
        second = await rt.collect()
        # Truncate kept the partial answer and closed the turn: "Stop" opened turn 1, whose
        # prompt holds the first turn, the partial answer and the new words.
        committed = [e for e in rt.events if e["type"] == "input_text_buffer.committed"]
        assert [e["turn_index"] for e in committed] == [0, 1]
        assert second.status == "completed"
        prompt = second.usage["cached_tokens"] + second.usage["computed_prompt_tokens"]
        assert prompt > committed[0]["input_tokens"] + partial + committed[1]["input_tokens"]


async def test_response_cancel(live_server: ServerProcess) -> None:
    async with session(live_server, LONG_ANSWER) as rt:
        await rt.append("Go on")
        await rt.commit()
        await rt.cancel()
        done = await next_of(rt, "response.done")
        assert done["response"]["status"] == "cancelled", done
        await rt.cancel()
        error = await rt.next_event(10)
        assert error["type"] == "error"
        assert error["error"]["code"] == "no_response_in_progress"


async def test_two_turns_keep_history_and_reuse_kv(live_server: ServerProcess) -> None:
    async with session(live_server, THINK_EVERY_CHUNK) as rt:
        first = await rt.ask(["My name is", " Ada and I like", " long walks"], words_per_second=4)
        second = await rt.ask(["What is", " my name?"], words_per_second=4)
    assert first.status == second.status == "completed"
    committed = [e for e in rt.events if e["type"] == "input_text_buffer.committed"]
    assert [e["turn_index"] for e in committed] == [0, 1]
    # The second turn's prompts (two thinking requests and the answer) start with the whole
    # first turn (over 64 tokens), so at least two of them get 32-token blocks from the cache.
    assert second.usage["thinking_tokens"] > 0
    assert second.usage["cached_tokens"] >= 2 * 32


async def test_disconnect_mid_turn_leaves_no_running_request(live_server: ServerProcess) -> None:
    thinking = {"chunk_tokens": 400, "min_tokens": 400, "budget_tokens": 400, "emit": True}
    rt = session(live_server, {"thinking": thinking})
    await rt.__aenter__()
    await rt.append("Think about this for a very long time")
    # Thinking is under way (400 tokens take seconds here) once its first delta arrives.
    first = await rt.next_event(30)
    while first["type"] == "input_text_buffer.appended" or not first.get("delta", "").strip():
        assert first["type"] != "thinking.done", "thinking ended before the disconnect"
        first = await rt.next_event(30)
    assert first["type"] == "thinking.delta"
    await rt.close()

    assert await wait_idle(live_server) == 0

    settings = LONG_ANSWER
    rt = session(live_server, settings)
    await rt.__aenter__()
    await rt.append("Answer at length")
    await rt.commit()
    await answer_started(rt)
    await rt.close()
    assert await wait_idle(live_server) == 0


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_event"),
        (json.dumps({"type": "no.such.event"}), "unknown_event"),
        (json.dumps({"type": "input_audio_buffer.append", "audio": "AAAA"}), "unsupported_event"),
        (json.dumps({"type": "input_text_buffer.append"}), "invalid_event"),
        (json.dumps({"type": "input_text_buffer.append", "delta": ""}), "invalid_event"),
        (
            json.dumps({"type": "session.update", "session": {"thinking": {"budget_tokens": -5}}}),
            "invalid_event",
        ),
        (
            json.dumps({"type": "input_text_buffer.commit", "event_id": "mine"}),
            "input_buffer_empty",
        ),
    ],
)
async def test_malformed_events_get_error_events_and_the_session_survives(
    live_server: ServerProcess, raw: str, code: str
) -> None:
    async with session(live_server, SHORT) as rt:
        assert rt._connection is not None
        await rt._connection.send(raw)
        error = await rt.next_event(10)
        assert error["type"] == "error"
        assert error["error"]["code"] == code
        assert error["error"]["message"]
        if code == "input_buffer_empty":
            assert error["error"]["event_id"] == "mine"
        answer = await rt.ask("Still there?")
        assert answer.status == "completed"


async def test_input_beyond_the_context_gets_a_clear_error(live_server: ServerProcess) -> None:
    async with session(live_server, SHORT) as rt:
        await rt.append("hello " * (LIVE_MAX_MODEL_LEN + 100))
        error = await rt.next_event(10)
        assert error["type"] == "error"
        assert error["error"]["code"] == "context_length_exceeded"
        assert str(LIVE_MAX_MODEL_LEN) in error["error"]["message"]
        answer = await rt.ask("A short one then")
        assert answer.status == "completed"


async def test_error_events_raise_in_the_client_helper(live_server: ServerProcess) -> None:
    async with session(live_server) as rt:
        await rt.commit()
        with pytest.raises(RealtimeError, match="input_buffer_empty"):
            await rt.collect()


async def test_websocket_needs_the_api_key(live_server: ServerProcess) -> None:
    with pytest.raises(InvalidStatus) as failure:
        async with connect(realtime_url(live_server.root_url)):
            pass
    assert failure.value.response.status_code == 401


def test_simulate_replays_a_message_over_http(live_server: ServerProcess) -> None:
    body = {
        "text": "What should I cook for dinner tonight",
        "words_per_second": 40,
        "words_per_chunk": 2,
        "session": {"thinking": {"emit": True, "chunk_tokens": 4}},
    }
    reply = httpx.post(
        f"{live_server.base_url}/amortized/realtime/simulate",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["chunks"] == 4
    assert result["status"] == "completed"
    assert result["listening_ms"] >= 3 / 40 * 1000 * 2 * 0.9
    assert [s["chunk_index"] for s in result["thinking"]] == [0, 1, 2, 3]
    assert all(s["text"] is not None for s in result["thinking"])
    assert result["usage"]["thinking_tokens"] == sum(s["tokens"] for s in result["thinking"])


@pytest.mark.parametrize(
    "body",
    [{"text": ""}, {"text": "hi", "words_per_second": 0}, {"text": "hi", "session": {"x": 1}}],
)
def test_simulate_rejects_bad_input_with_json_errors(
    live_server: ServerProcess, body: dict[str, Any]
) -> None:
    reply = httpx.post(
        f"{live_server.base_url}/amortized/realtime/simulate",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    assert 400 <= reply.status_code < 500
    assert reply.json()


async def test_time_budget_stops_thinking(live_server: ServerProcess) -> None:
    settings = {"thinking": {"chunk_tokens": 400, "min_tokens": 400, "chunk_ms": 100}}
    async with session(live_server, settings) as rt:
        await rt.append("Take your time")
        done = await next_of(rt, "thinking.done")
        assert done["reason"] == "time"
        assert done["tokens"] < 400
        assert await wait_idle(live_server) == 0


async def test_openai_style_item_and_response_create(live_server: ServerProcess) -> None:
    async with session(live_server, SHORT) as rt:
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Hi"}],
        }
        await rt.send({"type": "conversation.item.create", "item": item})
        await rt.send({"type": "response.create"})
        answer = await rt.collect()
        assert answer.status == "completed"
        assert answer.usage["input_tokens"] > 0
        await rt.send({"type": "session.update", "session": {"instructions": "Be terse."}})
        error = await rt.next_event(10)
        assert error["type"] == "error"
        assert error["error"]["code"] == "session_already_started"
