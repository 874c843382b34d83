"""Every amortized capability that makes sense as a tool, in one LangChain toolkit, and the
same tools as OpenAI function-calling schemas.

The tools talk HTTP to one amortized server, so an agent needs nothing but its URL (and the
API key, when the server was started with ``--api-key``).
"""

from collections.abc import Callable, Sequence
from typing import Any

import httpx
from langchain_core.tools import BaseTool, BaseToolkit
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from amortized.agents._errors import http_failure, transport_failure
from amortized.agents._http_tool import auth_headers, route_url
from amortized.agents.info_tool import ServerInfoTool
from amortized.agents.listening_chat import ListeningChatTool
from amortized.agents.planner_tool import GridPlanningTool
from amortized.agents.tabular_tool import TabularPredictionTool
from amortized.errors import AmortizedError

ToolFactory = Callable[["AmortizedToolkit"], BaseTool]

TOOLS_BY_CAPABILITY: dict[str, ToolFactory] = {
    "tabular": lambda kit: TabularPredictionTool(
        base_url=kit.base_url, api_key=kit.api_key, timeout=kit.timeout
    ),
    "planners": lambda kit: GridPlanningTool(
        base_url=kit.base_url, api_key=kit.api_key, timeout=kit.timeout
    ),
    "realtime": lambda kit: ListeningChatTool(
        base_url=kit.base_url, api_key=kit.api_key, session=kit.listening_session
    ),
}
"""Server capability name (as ``/v1/amortized/info`` lists it) -> its tool. KV prediction
has none: it speeds up every request instead of answering a kind of question. CASAL
checkpoints need none either: the served model itself abstains; ``amortized_server_info``
says which models are such checkpoints."""


class AmortizedToolkit(BaseToolkit):
    """The tools of one amortized server: ``AmortizedToolkit(base_url=...).get_tools()``."""

    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str | None = None
    timeout: float = 600.0
    capabilities: list[str] | None = Field(
        default=None,
        description="Capabilities to offer tools for (default: all that have one).",
    )
    include_info: bool = Field(
        default=True, description="Also offer amortized_server_info (models, capabilities)."
    )
    listening_session: dict[str, Any] | None = Field(
        default=None,
        description="Session settings for the think-while-listening tool (the realtime "
        "protocol's session.update body, e.g. answer max_tokens).",
    )

    def model_post_init(self, context: Any, /) -> None:
        unknown = sorted(set(self.capabilities or ()) - set(TOOLS_BY_CAPABILITY))
        if unknown:
            raise ValueError(
                f"no tool for capabilities {', '.join(unknown)}; "
                f"choose from {', '.join(TOOLS_BY_CAPABILITY)}"
            )

    def get_tools(self) -> list[BaseTool]:
        names = self.capabilities if self.capabilities is not None else list(TOOLS_BY_CAPABILITY)
        tools = [TOOLS_BY_CAPABILITY[name](self) for name in names]
        if self.include_info:
            tools.append(
                ServerInfoTool(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout)
            )
        return tools

    @classmethod
    async def from_server(
        cls, base_url: str = "http://127.0.0.1:8000/v1", api_key: str | None = None
    ) -> "AmortizedToolkit":
        """A toolkit with tools for exactly the capabilities the server has enabled."""
        enabled = await server_capabilities(base_url, api_key)
        return cls(
            base_url=base_url,
            api_key=api_key,
            capabilities=[n for n in TOOLS_BY_CAPABILITY if n in enabled],
        )


async def server_capabilities(base_url: str, api_key: str | None = None) -> list[str]:
    """Names of the capabilities ``GET /v1/amortized/info`` reports as enabled."""
    url = route_url(base_url, "info")
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            reply = await client.get(url, headers=auth_headers(api_key))
    except httpx.HTTPError as error:
        raise AmortizedError(transport_failure("amortized", url, error, 30)) from error
    if reply.status_code != 200:
        raise AmortizedError(http_failure("amortized", url, reply.status_code, reply.content))
    try:
        capabilities = reply.json().get("capabilities", [])
        return [str(c["name"]) for c in capabilities]
    except (ValueError, AttributeError, TypeError, KeyError) as error:
        raise AmortizedError(f"{url} did not answer like an amortized server") from error


def openai_tool_schemas(tools: Sequence[BaseTool], *, strict: bool = False) -> list[dict[str, Any]]:
    """``tools`` in the OpenAI function-calling format (``tools=`` of chat completions).

    ``strict`` marks them ``"strict": true`` with OpenAI's strict-schema rules (every field
    required, nullable where optional, no extra fields); vLLM then constrains a call's
    arguments to the schema, not only its envelope."""
    return [convert_to_openai_tool(tool, strict=strict or None) for tool in tools]


def tools_by_name(tools: Sequence[BaseTool]) -> dict[str, BaseTool]:
    by_name = {tool.name: tool for tool in tools}
    if len(by_name) != len(tools):
        raise ValueError("tool names must be unique")
    return by_name
