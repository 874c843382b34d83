"""Agent-facing adapters. They reach capabilities through the HTTP API, never through
``amortized.serving`` internals.
"""

from typing import TYPE_CHECKING

from amortized._lazy import lazy_exports

if TYPE_CHECKING:
    from amortized.agents.info_tool import ServerInfoTool
    from amortized.agents.listening_chat import ListeningChat, ListeningChatTool
    from amortized.agents.loop import AgentRun, ToolCallRecord, run_agent
    from amortized.agents.planner_tool import GridPlanningTool
    from amortized.agents.realtime import RealtimeAnswer, RealtimeError, RealtimeSession
    from amortized.agents.tabular_tool import TabularPredictionTool
    from amortized.agents.toolkit import AmortizedToolkit, openai_tool_schemas

_EXPORTS = {
    "ServerInfoTool": "amortized.agents.info_tool",
    "ListeningChat": "amortized.agents.listening_chat",
    "ListeningChatTool": "amortized.agents.listening_chat",
    "AgentRun": "amortized.agents.loop",
    "ToolCallRecord": "amortized.agents.loop",
    "run_agent": "amortized.agents.loop",
    "GridPlanningTool": "amortized.agents.planner_tool",
    "RealtimeAnswer": "amortized.agents.realtime",
    "RealtimeError": "amortized.agents.realtime",
    "RealtimeSession": "amortized.agents.realtime",
    "TabularPredictionTool": "amortized.agents.tabular_tool",
    "AmortizedToolkit": "amortized.agents.toolkit",
    "openai_tool_schemas": "amortized.agents.toolkit",
}
"""Imported on first use, so the CLI can build its parser without these imports."""

__all__ = [
    "AgentRun",
    "AmortizedToolkit",
    "GridPlanningTool",
    "ListeningChat",
    "ListeningChatTool",
    "RealtimeAnswer",
    "RealtimeError",
    "RealtimeSession",
    "ServerInfoTool",
    "TabularPredictionTool",
    "ToolCallRecord",
    "openai_tool_schemas",
    "run_agent",
]


__getattr__ = lazy_exports(__name__, _EXPORTS)
