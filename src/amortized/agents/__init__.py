"""Agent-facing adapters. They reach capabilities through the HTTP API, never through
``amortized.serving`` internals.
"""

from amortized.agents.listening_chat import ListeningChat, ListeningChatTool
from amortized.agents.planner_tool import GridPlanningTool
from amortized.agents.realtime import RealtimeAnswer, RealtimeError, RealtimeSession
from amortized.agents.tabular_tool import TabularPredictionTool

__all__ = [
    "GridPlanningTool",
    "ListeningChat",
    "ListeningChatTool",
    "RealtimeAnswer",
    "RealtimeError",
    "RealtimeSession",
    "TabularPredictionTool",
]
