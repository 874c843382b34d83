"""LangChain tool for ``GET /v1/amortized/info``: what the server serves and can do."""

from typing import Any, Literal

from pydantic import BaseModel

from amortized.agents._http_tool import AmortizedRouteTool
from amortized.serving.routes.info.protocol import InfoResponse


class NoArguments(BaseModel):
    """The tool takes no arguments."""


class ServerInfoTool(AmortizedRouteTool):
    """The served models (with CASAL provenance) and the enabled capabilities."""

    name: str = "amortized_server_info"
    description: str = (
        "List the models this server serves (CASAL ones abstain when unsure) and its capabilities."
    )
    args_schema: type[BaseModel] = NoArguments
    route: str = "info"
    output_model: type[BaseModel] | None = InfoResponse
    method: Literal["GET", "POST"] = "GET"

    def _summarize(self, result: dict[str, Any]) -> str:
        models = ", ".join(
            m["id"] + (f" (CASAL, layer {m['casal'].get('layer')})" if m.get("casal") else "")
            for m in result.get("models", [])
        )
        capabilities = ", ".join(c["name"] for c in result.get("capabilities", []))
        return (
            f"amortized {result.get('version')} on vLLM {result.get('vllm_version')}; "
            f"models: {models or 'none'}; capabilities: {capabilities or 'none'}"
        )
