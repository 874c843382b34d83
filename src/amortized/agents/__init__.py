"""Agent-facing adapters. They reach capabilities through the HTTP API, never through
``amortized.serving`` internals.
"""

from amortized.agents.info_tool import ServerInfoTool
from amortized.agents.listening_chat import ListeningChat, ListeningChatTool
from amortized.agents.loop import AgentRun, ToolCallRecord, run_agent
from amortized.agents.planner_tool import GridPlanningTool
from amortized.agents.realtime import RealtimeAnswer, RealtimeError, RealtimeSession
from amortized.agents.tabular_tool import TabularPredictionTool
from amortized.agents.toolkit import AmortizedToolkit, openai_tool_schemas

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
