"""A scripted stand-in for a capable LLM: a small OpenAI-compatible server that answers chat
completions with prepared replies, in order, and records what it was asked.

It stands in where a model able to write and fix programs is needed and none can run here;
the same test modules also drive the loop with the real tiny model.
"""

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException

from amortized.serving.process import free_port

MAX_MODEL_LEN = 32768


class ScriptedLLM:
    """Replies from ``script`` one per chat request; the last one repeats when it runs out."""

    def __init__(self, script: Sequence[str]) -> None:
        self.script = list(script)
        self.requests: list[list[dict[str, Any]]] = []
        self.app = FastAPI()
        self._routes()

    @property
    def prompts(self) -> list[str]:
        """The last user message of every chat request, in order."""
        return [str(messages[-1]["content"]) for messages in self.requests]

    def _routes(self) -> None:
        app = self.app

        @app.get("/v1/models")
        def models() -> dict[str, Any]:
            return {
                "object": "list",
                "data": [{"id": "scripted", "object": "model", "max_model_len": MAX_MODEL_LEN}],
            }

        @app.post("/tokenize")
        def tokenize(body: dict[str, Any]) -> dict[str, Any]:
            text = body.get("prompt") or "".join(m["content"] for m in body.get("messages", []))
            return {"count": len(text) // 4 + 1}

        @app.post("/v1/chat/completions")
        def chat(body: dict[str, Any]) -> dict[str, Any]:
            messages = body.get("messages")
            if not messages:
                raise HTTPException(400, "messages required")
            self.requests.append(messages)
            reply = self.script[min(len(self.requests), len(self.script)) - 1]
            prompt_tokens = sum(len(m["content"]) for m in messages) // 4 + 1
            return {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "scripted",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(reply) // 4 + 1,
                    "total_tokens": prompt_tokens + len(reply) // 4 + 1,
                },
            }


@contextmanager
def serve_scripted(
    script: Sequence[str], port: int | None = None
) -> Iterator[tuple[ScriptedLLM, str]]:
    """Run a :class:`ScriptedLLM` on ``port`` (default: a free one); yields it and its ``/v1``
    base URL."""
    llm = ScriptedLLM(script)
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(llm.app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the scripted LLM server did not start")
        time.sleep(0.02)
    try:
        yield llm, f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
