"""A plain tool-calling loop over the OpenAI chat API: send the tools, run the calls the model
makes, return the results as tool messages, repeat until the model answers or a step limit.

Works against any OpenAI-compatible server. With vLLM, ``tool_choice="auto"`` needs the
server started with ``--enable-auto-tool-choice --tool-call-parser hermes`` (the parser that
fits amortized's chat template); a named ``force_tool`` or ``"required"`` instead use vLLM's
structured outputs, so even a tiny model emits a valid call.
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import openai
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from pydantic import ValidationError

from amortized.agents.toolkit import openai_tool_schemas, tools_by_name
from amortized.errors import AmortizedError
from amortized.llm.openai_compatible import first_served_model

ToolChoice = Literal["auto", "required", "none"]


@dataclass(frozen=True)
class ToolCallRecord:
    """One call the model made and what the tool returned."""

    id: str
    name: str
    arguments: str
    """The arguments exactly as the model wrote them (a JSON string)."""
    content: str
    """What went back to the model as the tool message."""
    artifact: Any = None
    """The tool's structured result, when it has one (never shown to the model)."""
    error: bool = False


@dataclass
class AgentRun:
    answer: str | None
    """The model's final text; ``None`` when the step limit ended the run."""
    stopped: Literal["answer", "step_limit"]
    calls: list[ToolCallRecord] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    """The whole conversation as sent, ending with the final assistant message."""
    responses: list[Any] = field(default_factory=list)
    """The raw chat completions, one per step."""


async def call_tool(
    tools: dict[str, BaseTool], call_id: str, name: str, arguments: str | dict[str, Any]
) -> ToolCallRecord:
    """Run one tool call (``arguments`` as the model's JSON string, or already parsed). Bad
    calls (unknown tool, malformed JSON, arguments the schema rejects, a failing tool) become
    an error result the model reads, never an exception."""
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    tool = tools.get(name)
    if tool is None:
        known = ", ".join(sorted(tools))
        return ToolCallRecord(
            call_id, name, raw, f"error: no tool {name!r}; use {known}", error=True
        )
    if isinstance(arguments, str):
        try:
            args = json.loads(arguments or "{}")
        except json.JSONDecodeError as error:
            message = f"error: arguments are not valid JSON ({error.msg} at {error.pos})"
            return ToolCallRecord(call_id, name, raw, message, error=True)
    else:
        args = arguments
    if not isinstance(args, dict):
        return ToolCallRecord(
            call_id, name, raw, "error: arguments must be a JSON object", error=True
        )
    try:
        reply = await tool.ainvoke({"type": "tool_call", "id": call_id, "name": name, "args": args})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
            for e in error.errors()
        )
        return ToolCallRecord(call_id, name, raw, f"error: {problems}", error=True)
    if not isinstance(reply, ToolMessage):
        return ToolCallRecord(call_id, name, raw, str(reply))
    return ToolCallRecord(
        call_id,
        name,
        raw,
        reply.text,
        reply.artifact,
        reply.status == "error",
    )


async def run_agent(
    task: str,
    tools: Sequence[BaseTool],
    *,
    client: openai.AsyncOpenAI,
    model: str | None = None,
    force_tool: str | None = None,
    tool_choice: ToolChoice = "auto",
    max_steps: int = 4,
    system: str | None = None,
    max_tokens: int = 256,
    temperature: float = 0.0,
    extra_body: dict[str, Any] | None = None,
    strict: bool = True,
    on_call: Callable[[ToolCallRecord], None] | None = None,
) -> AgentRun:
    """Let the model work on ``task`` with ``tools``.

    ``force_tool`` makes the first step call that tool; every other step uses
    ``tool_choice``. ``max_steps`` counts model calls. ``strict`` sends strict schemas, so a
    vLLM server with a tool parser constrains the arguments, not only the call's envelope.
    """
    if max_steps < 1:
        raise ValueError("max_steps must be at least 1")
    by_name = tools_by_name(tools)
    if force_tool is not None and force_tool not in by_name:
        raise AmortizedError(f"no tool {force_tool!r}; choose from {', '.join(sorted(by_name))}")
    schemas = openai_tool_schemas(tools, strict=strict)
    model = model or await served_model(client)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": task})
    run = AgentRun(answer=None, stopped="step_limit", messages=messages)
    for step in range(max_steps):
        choice: Any = tool_choice
        if step == 0 and force_tool is not None:
            choice = {"type": "function", "function": {"name": force_tool}}
        try:
            response = await client.chat.completions.create(
                model=model,
                messages=messages,  # type: ignore[arg-type]
                tools=schemas,  # type: ignore[arg-type]
                tool_choice=choice,
                max_tokens=max_tokens,
                temperature=temperature,
                extra_body=extra_body,
            )
        except openai.BadRequestError as error:
            hint = ""
            if choice == "auto" and "auto" in str(error):
                hint = (
                    "; start the server with `-- --enable-auto-tool-choice --tool-call-parser "
                    "hermes`, or force a tool"
                )
            raise AmortizedError(
                f"the model server refused the request: {error.message}{hint}"
            ) from error
        run.responses.append(response)
        message = response.choices[0].message
        tool_calls = message.tool_calls or []
        assistant: dict[str, Any] = {"role": "assistant", "content": message.content or ""}
        if tool_calls:
            assistant["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
                for call in tool_calls
                if call.type == "function"
            ]
        messages.append(assistant)
        if not tool_calls and step == 0 and force_tool is not None:
            reason = response.choices[0].finish_reason
            hint = "; raise max_tokens" if reason == "length" else ""
            raise AmortizedError(
                f"the model did not complete the forced call to {force_tool} "
                f"(finish_reason {reason}){hint}"
            )
        if not tool_calls:
            run.answer = message.content or ""
            run.stopped = "answer"
            return run
        for call in tool_calls:
            if call.type != "function":
                continue
            record = await call_tool(by_name, call.id, call.function.name, call.function.arguments)
            run.calls.append(record)
            if on_call is not None:
                on_call(record)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": record.content})
    return run


async def served_model(client: openai.AsyncOpenAI) -> str:
    """The first model the server lists."""
    try:
        return await first_served_model(client)
    except openai.APIConnectionError as error:
        raise AmortizedError(f"cannot reach {client.base_url}; is the server running?") from error
    except openai.AuthenticationError as error:
        raise AmortizedError(f"{client.base_url} refused the API key; pass --api-key") from error
    except RuntimeError as error:  # no model served
        raise AmortizedError(str(error)) from error
