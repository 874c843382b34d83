"""Every tool turns every HTTP failure into a ToolException that names the cause: against the
live server (wrong key, missing route), a real HTTP server that answers odd error bodies, a
socket that never answers and a port nobody listens on; over MCP the same failures are
``isError`` results."""

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest
from langchain_core.tools import BaseTool, ToolException
from mcp import Client

from amortized.agents import AmortizedToolkit
from amortized.agents._errors import error_detail
from amortized.agents.mcp_server import build_mcp_server
from amortized.serving.process import ServerProcess, free_port
from tests.conftest import API_KEY

ARGUMENTS: dict[str, dict[str, Any]] = {
    "tabular_predict": {
        "columns": ["x", "y"],
        "target": "y",
        "train": [[1, "a"], [2, "b"]],
        "test": [[1]],
    },
    "grid_plan": {"env": "GRASP", "count": 1},
    "think_while_listening_chat": {"message": "hello"},
    "amortized_server_info": {},
}


def kit_tools(base_url: str, api_key: str | None = None, timeout: float = 10) -> list[BaseTool]:
    return AmortizedToolkit(base_url=base_url, api_key=api_key, timeout=timeout).get_tools()


async def failure_of(tool: BaseTool) -> str:
    """The ToolException text of one call with valid arguments."""
    with pytest.raises(ToolException) as caught:
        await tool._arun(**ARGUMENTS[tool.name])
    return str(caught.value)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"error": "Unauthorized"}', "Unauthorized"),
        (b'{"error": {"message": "bad key", "type": "x"}}', "bad key"),
        (b'{"detail": [{"loc": ["body"], "msg": "field required"}]}', "body: field required"),
        (b'{"message": "nope"}', "nope"),
        (b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
        (b'"just a string"', "just a string"),
        (b"[1, 2]", "[1, 2]"),
        (b"", ""),
    ],
)
def test_error_bodies_of_any_shape_give_their_text(body: bytes, detail: str) -> None:
    assert error_detail(body) == detail


@pytest.mark.server
async def test_a_wrong_api_key_is_a_tool_error_for_every_tool(live_server: ServerProcess) -> None:
    for tool in kit_tools(live_server.base_url, "wrong-key"):
        message = await failure_of(tool)
        assert "refused the API key (401" in message, (tool.name, message)
        assert tool.name in message


@pytest.mark.server
async def test_a_missing_route_is_a_tool_error_naming_the_url(live_server: ServerProcess) -> None:
    wrong_base = live_server.root_url + "/not-here/v1"
    for tool in kit_tools(wrong_base, API_KEY):
        message = await failure_of(tool)
        assert "404" in message or "403" in message, (tool.name, message)


class OddServer(BaseHTTPRequestHandler):
    """Answers every request with the status and body the path asks for: /500, /403, ..."""

    replies: ClassVar[dict[str, tuple[int, bytes]]] = {
        "500": (500, b"Internal Server Error"),
        "403": (403, b'{"detail": "not for you"}'),
        "401": (401, b'{"error": "Unauthorized"}'),
        "200": (200, b"not json"),
    }

    def _answer(self) -> None:
        code = self.path.strip("/").split("/")[0]
        status, body = self.replies.get(code, (418, b"teapot"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def odd_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OddServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("status", "fragment"),
    [
        ("500", "the server failed (500): Internal Server Error"),
        ("403", "forbids this request (403 Forbidden): not for you"),
        ("401", "refused the API key (401 Unauthorized): Unauthorized"),
        ("200", "other than a JSON object"),
    ],
)
async def test_odd_answers_are_tool_errors(odd_server: str, status: str, fragment: str) -> None:
    for tool in kit_tools(f"{odd_server}/{status}/v1"):
        if tool.name == "think_while_listening_chat":
            continue  # a WebSocket tool: covered by the tests below
        message = await failure_of(tool)
        assert fragment in message, (tool.name, message)


async def test_no_server_and_a_silent_server_are_tool_errors() -> None:
    for tool in kit_tools(f"http://127.0.0.1:{free_port()}/v1"):
        message = await failure_of(tool)
        assert "cannot connect" in message, (tool.name, message)
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        base = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        for tool in kit_tools(base, timeout=0.5):
            if tool.name == "think_while_listening_chat":
                continue
            message = await failure_of(tool)
            assert "no answer" in message, (tool.name, message)


@pytest.mark.server
async def test_over_mcp_failures_are_error_results(live_server: ServerProcess) -> None:
    tools = kit_tools(live_server.base_url, "wrong-key")
    async with Client(build_mcp_server(tools)) as client:
        for name, arguments in ARGUMENTS.items():
            result = await client.call_tool(name, arguments)
            assert result.is_error, name
            text = result.content[0].text  # type: ignore[union-attr]
            assert "401" in text, (name, text)
    # The server kept serving.
    reply = httpx.get(
        f"{live_server.base_url}/models", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert reply.status_code == 200


def test_sync_calls_fail_the_same_way() -> None:
    tool = kit_tools(f"http://127.0.0.1:{free_port()}/v1")[-1]
    with pytest.raises(ToolException, match="cannot connect"):
        tool._run(**ARGUMENTS[tool.name])
