"""LangChain adapters for think-while-listening: a runnable and a tool.

The runnable takes the user's message as it arrives (a list of text chunks, or a string
split into words and paced at a speaking rate) and returns or streams the answer.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, Field
from websockets.exceptions import InvalidStatus, WebSocketException

from amortized.agents._errors import http_failure, transport_failure
from amortized.agents._schema import compact_schema
from amortized.agents.realtime import RealtimeError, RealtimeSession, realtime_url

ListeningInput = str | Sequence[str]


class ListeningChat(Runnable[ListeningInput, str]):
    """One realtime session per call: stream the input in, think while listening, answer."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        words_per_second: float | None = None,
        session: dict[str, Any] | None = None,
    ) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.words_per_second = words_per_second
        self.session = session

    def invoke(
        self, input: ListeningInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> str:
        return asyncio.run(self.ainvoke(input, config, **kwargs))

    async def ainvoke(
        self, input: ListeningInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> str:
        return "".join([delta async for delta in self.astream(input, config, **kwargs)])

    def stream(
        self, input: ListeningInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[str]:
        yield self.invoke(input, config, **kwargs)

    async def astream(
        self, input: ListeningInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[str]:
        chunks = _chunks(input)
        pace = self.words_per_second
        async with RealtimeSession(self.base_url, self.api_key, session=self.session) as session:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for index, chunk in enumerate(chunks):
                if pace and index:
                    await asyncio.sleep(max(0.0, start + index / pace - loop.time()))
                await session.append(chunk)
            await session.commit()
            async for delta in session.answer():
                yield delta


def _chunks(input: ListeningInput) -> list[str]:
    if isinstance(input, str):
        words = input.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]
    return [c for c in input if c]


class ListeningChatInput(BaseModel):
    message: str = Field(min_length=1, description="what the user says")


class ListeningChatTool(BaseTool):
    """Ask the served model, which thinks while the message streams in and answers at once."""

    name: str = "think_while_listening_chat"
    description: str = (
        "Ask the served model; it thinks while the message streams in and answers at once."
    )
    args_schema: type[BaseModel] = ListeningChatInput
    handle_tool_error: bool = True
    base_url: str = "http://127.0.0.1:8000"
    api_key: str | None = None
    session: dict[str, Any] | None = None
    words_per_second: float | None = None
    """Replay each message at this speaking rate (None: as fast as it goes)."""

    @property
    def tool_call_schema(self) -> dict[str, Any]:
        return compact_schema(self.args_schema)

    def _run(self, message: str, **_: Any) -> str:
        return asyncio.run(self._arun(message))

    async def _arun(self, message: str, **_: Any) -> str:
        chat = ListeningChat(
            self.base_url,
            self.api_key,
            words_per_second=self.words_per_second,
            session=self.session,
        )
        url = realtime_url(self.base_url)
        try:
            return await chat.ainvoke(message)
        except RealtimeError as error:
            raise ToolException(f"{self.name}: {error}") from error
        except InvalidStatus as error:  # the handshake was answered with an HTTP error
            response = error.response
            failure = http_failure(self.name, url, response.status_code, response.body or b"")
            raise ToolException(failure) from error
        except (OSError, TimeoutError, WebSocketException) as error:
            raise ToolException(transport_failure(self.name, url, error, None)) from error
