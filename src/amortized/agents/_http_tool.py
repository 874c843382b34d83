"""What every tool that calls an ``/v1/amortized/...`` route shares: URL, auth, errors."""

from typing import Any, Literal

import httpx
from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel

from amortized.agents._errors import error_detail, http_failure, transport_failure
from amortized.agents._schema import compact_schema


def route_url(base_url: str, route: str) -> str:
    """``http://host:port[/v1]`` and ``tabular/predict`` -> the route's full URL."""
    return f"{base_url.rstrip('/').removesuffix('/v1')}/v1/amortized/{route}"


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class AmortizedRouteTool(BaseTool):
    """Sends its arguments to one amortized route; HTTP errors become ``ToolException``."""

    route: str = ""
    """Path below ``/v1/amortized/``, e.g. ``tabular/predict``."""
    output_model: type[BaseModel] | None = None
    """The route's response model: the artifact's shape (MCP's ``outputSchema``)."""
    read_only: bool = True
    """Whether a call leaves the server as it was (MCP's ``readOnlyHint``)."""
    method: Literal["GET", "POST"] = "POST"
    """POST sends the body as JSON; GET sends nothing."""
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str | None = None
    timeout: float = 600.0
    handle_tool_error: bool = True
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"

    @property
    def tool_call_schema(self) -> dict[str, Any]:
        """The arguments' schema as models see it: compact (every prompt carries it)."""
        return compact_schema(self.args_schema)

    def _url(self) -> str:
        return route_url(self.base_url, self.route)

    def _headers(self) -> dict[str, str]:
        return auth_headers(self.api_key)

    def _body(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The request body for the route; by default the arguments themselves."""
        return arguments

    def _summarize(self, result: dict[str, Any]) -> str:
        """The short text the model reads; the full result travels as the artifact."""
        raise NotImplementedError

    def _run(self, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        try:
            with httpx.Client(timeout=self.timeout) as client:
                reply = client.request(self.method, self._url(), **self._request(kwargs))
        except httpx.HTTPError as error:
            raise self._unreachable(error) from error
        return self._handle(reply)

    async def _arun(self, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                reply = await client.request(self.method, self._url(), **self._request(kwargs))
        except httpx.HTTPError as error:
            raise self._unreachable(error) from error
        return self._handle(reply)

    def _request(self, arguments: dict[str, Any]) -> dict[str, Any]:
        if self.method == "GET":
            return {"headers": self._headers()}
        return {"json": self._body(arguments), "headers": self._headers()}

    def _unreachable(self, error: httpx.HTTPError) -> ToolException:
        return ToolException(transport_failure(self.name, self._url(), error, self.timeout))

    def _handle(self, reply: httpx.Response) -> tuple[str, dict[str, Any]]:
        if reply.status_code >= 400:
            raise ToolException(
                http_failure(self.name, self._url(), reply.status_code, reply.content)
            )
        try:
            result = reply.json()
        except ValueError:
            result = None
        if not isinstance(result, dict):
            raise ToolException(
                f"{self.name}: {self._url()} answered {reply.status_code} with something "
                f"other than a JSON object: {error_detail(reply.content)[:200]}"
            )
        return self._summarize(result), result
