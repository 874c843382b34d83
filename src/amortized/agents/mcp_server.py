"""amortized's tools as an MCP server (``amortized mcp``, stdio), for MCP clients such as
Claude Desktop or IDE agents. Listing and calling go through the same LangChain tools and
the same error handling as the OpenAI tool-calling loop."""

import uuid
from collections.abc import Sequence
from typing import Any

import mcp_types as types
from langchain_core.tools import BaseTool
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from pydantic import BaseModel

from amortized import __version__
from amortized.agents.loop import call_tool
from amortized.agents.toolkit import openai_tool_schemas, tools_by_name

SERVER_NAME = "amortized"


TEXT_ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
}
"""The structured result of a tool whose result is text (the think-while-listening chat)."""


def output_schema(tool: BaseTool) -> dict[str, Any]:
    """What a successful call's ``structuredContent`` looks like."""
    model = getattr(tool, "output_model", None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model.model_json_schema(mode="serialization")
    return TEXT_ANSWER_SCHEMA


def annotations(tool: BaseTool) -> types.ToolAnnotations:
    """Hints for clients: every tool reaches only this server; most change nothing there."""
    read_only = bool(getattr(tool, "read_only", True))
    return types.ToolAnnotations(
        read_only_hint=read_only,
        destructive_hint=False,
        idempotent_hint=read_only,
        open_world_hint=False,
    )


def mcp_tool_list(tools: Sequence[BaseTool]) -> list[types.Tool]:
    """The tools as MCP declares them; input schemas are the OpenAI schemas' parameters."""
    by_name = tools_by_name(tools)
    return [
        types.Tool(
            name=schema["function"]["name"],
            description=schema["function"].get("description"),
            input_schema=schema["function"]["parameters"],
            output_schema=output_schema(by_name[schema["function"]["name"]]),
            annotations=annotations(by_name[schema["function"]["name"]]),
        )
        for schema in openai_tool_schemas(tools)
    ]


def build_mcp_server(tools: Sequence[BaseTool]) -> "Server[Any]":
    """An MCP server that lists ``tools`` and runs their calls. A failing call is a result
    with ``is_error`` set and the reason as text, as MCP asks, not a protocol error."""
    by_name = tools_by_name(tools)
    listed = mcp_tool_list(tools)

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=listed)

    async def run_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        record = await call_tool(
            by_name, f"mcp-{uuid.uuid4().hex[:12]}", params.name, dict(params.arguments or {})
        )
        structured: dict[str, Any]
        if record.error:
            structured = {"error": {"message": record.content}}
        elif isinstance(record.artifact, dict):
            structured = record.artifact
        else:
            structured = {"answer": record.content}
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=record.content)],
            structured_content=structured,
            is_error=record.error,
        )

    return Server(SERVER_NAME, version=__version__, on_list_tools=list_tools, on_call_tool=run_tool)


async def serve_stdio(tools: Sequence[BaseTool]) -> None:
    """Serve ``tools`` over this process's stdin/stdout until the client disconnects."""
    from mcp.server.stdio import stdio_server

    server = build_mcp_server(tools)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())
