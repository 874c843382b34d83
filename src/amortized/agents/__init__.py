"""Agent-facing adapters (to come): a LangChain toolkit, OpenAI tool schemas, an MCP server
and the realtime client. They reach capabilities through the HTTP API, never through
``amortized.serving`` internals.
"""
