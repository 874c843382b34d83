"""``amortized agent run|tools`` and ``amortized mcp``: the toolkit from the command line."""

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING

from amortized.errors import AmortizedError

if TYPE_CHECKING:
    from amortized.agents.toolkit import AmortizedToolkit
    from amortized.cli_support import OneLineParser

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", default=DEFAULT_BASE_URL, help="amortized server (%(default)s)")
    p.add_argument("--api-key", help="the server's --api-key, if it has one")
    p.add_argument(
        "--tools",
        help="comma-separated capabilities to offer tools for (tabular, planners, realtime; "
        "default: all)",
    )


def add_agent_command(subparsers: "argparse._SubParsersAction[OneLineParser]") -> None:
    from amortized.cli_support import OneLineParser

    p = subparsers.add_parser("agent", help="a tool-calling agent over the served model")
    sub = p.add_subparsers(dest="agent_command", required=True, parser_class=OneLineParser)
    run = sub.add_parser(
        "run",
        help="let the served model work on a task with amortized's tools",
        description="Send the task and the tools to the served model, run the tool calls it "
        "makes, return the results, and repeat until it answers or --max-steps.",
    )
    run.add_argument("task", help="what to do")
    _server_options(run)
    run.add_argument("--model", help="served model name (default: the server's first)")
    run.add_argument("--force-tool", metavar="NAME", help="the first step must call this tool")
    run.add_argument(
        "--tool-choice",
        choices=("auto", "required", "none"),
        default="auto",
        help="tool choice after a forced first step (auto needs the server started with "
        "`-- --enable-auto-tool-choice --tool-call-parser hermes`)",
    )
    run.add_argument("--max-steps", type=int, default=4, help="model calls at most")
    run.add_argument("--max-tokens", type=int, default=256, help="per model call")
    run.add_argument(
        "--logit-bias",
        metavar="JSON",
        help="OpenAI logit_bias for every model call, e.g. '{\"220\": -100}'",
    )
    run.add_argument("--json", action="store_true", help="print the whole run as JSON")
    run.set_defaults(handler=_run)
    tools = sub.add_parser("tools", help="print the tools as OpenAI function-calling schemas")
    _server_options(tools)
    tools.set_defaults(handler=_tools)


def add_mcp_command(subparsers: "argparse._SubParsersAction[OneLineParser]") -> None:
    p = subparsers.add_parser(
        "mcp",
        help="serve amortized's tools to MCP clients (stdio)",
        description="An MCP server on stdin/stdout whose tools call the amortized server at "
        "--base-url.",
    )
    _server_options(p)
    p.set_defaults(handler=_mcp)


def _toolkit(args: argparse.Namespace) -> "AmortizedToolkit":
    from amortized.agents.toolkit import TOOLS_BY_CAPABILITY, AmortizedToolkit

    names = None
    if args.tools:
        names = [n.strip() for n in args.tools.split(",") if n.strip()]
        unknown = sorted(set(names) - set(TOOLS_BY_CAPABILITY))
        if unknown:
            raise AmortizedError(
                f"--tools: no tool for capabilities {', '.join(unknown)}; "
                f"choose from {', '.join(TOOLS_BY_CAPABILITY)}"
            )
    return AmortizedToolkit(base_url=args.base_url, api_key=args.api_key, capabilities=names)


def _tools(args: argparse.Namespace) -> int:
    from amortized.agents.toolkit import openai_tool_schemas

    print(json.dumps(openai_tool_schemas(_toolkit(args).get_tools()), indent=2))
    return 0


def _run(args: argparse.Namespace) -> int:
    import openai

    from amortized.agents.loop import ToolCallRecord, run_agent
    from amortized.cli_support import json_object_option

    if args.max_steps < 1:
        raise AmortizedError("--max-steps must be at least 1")
    tools = _toolkit(args).get_tools()
    extra_body = None
    if args.logit_bias:
        extra_body = {"logit_bias": json_object_option(args.logit_bias, "--logit-bias")}

    def show(call: ToolCallRecord) -> None:
        outcome = "error" if call.error else "ok"
        print(f"tool {call.name} [{outcome}]: {call.content[:200]}", file=sys.stderr)

    async def go() -> int:
        client = openai.AsyncOpenAI(base_url=args.base_url, api_key=args.api_key or "EMPTY")
        try:
            run = await run_agent(
                args.task,
                tools,
                client=client,
                model=args.model,
                force_tool=args.force_tool,
                tool_choice=args.tool_choice,
                max_steps=args.max_steps,
                max_tokens=args.max_tokens,
                extra_body=extra_body,
                on_call=show,
            )
        finally:
            await client.close()
        if args.json:
            payload = {
                "answer": run.answer,
                "stopped": run.stopped,
                "prompt_tokens": [
                    r.usage.prompt_tokens for r in run.responses if getattr(r, "usage", None)
                ],
                "calls": [{**asdict(c), "artifact": c.artifact} for c in run.calls],
            }
            print(json.dumps(payload, default=str))
        elif run.answer is not None:
            print(run.answer)
        if run.stopped == "step_limit":
            print(f"stopped after {args.max_steps} steps without an answer", file=sys.stderr)
            return 1
        return 0

    return asyncio.run(go())


def _mcp(args: argparse.Namespace) -> int:
    from amortized.agents.mcp_server import serve_stdio

    asyncio.run(serve_stdio(_toolkit(args).get_tools()))
    return 0
