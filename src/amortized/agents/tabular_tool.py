"""LangChain tool for many-shot tabular prediction through ``/v1/amortized/tabular/predict``."""

from typing import Any, Literal

import httpx
from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, Field

JsonCell = str | int | float | bool | None


class TabularPredictionInput(BaseModel):
    train: list[dict[str, JsonCell]] = Field(
        min_length=2, description="Rows with known labels, as JSON objects (null = missing)."
    )
    test: list[dict[str, JsonCell]] = Field(min_length=1, description="Rows to label.")
    target: str = Field(description="The label column of the training rows.")
    shots: int = Field(default=256, ge=1, description="Demonstrations per prompt.")
    guided: Literal["json", "regex", "off"] = "json"


class TabularPredictionTool(BaseTool):
    """Label rows from examples with the served model (no training; in-context learning)."""

    name: str = "tabular_predict"
    description: str = (
        "Classify table rows by showing the served model many labelled example rows. "
        "Give training rows with the target column, test rows without it, and the target "
        "name. Returns one label per test row, with class probabilities."
    )
    args_schema: type[BaseModel] = TabularPredictionInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: bool = True
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str | None = None
    timeout: float = 600.0

    def _run(self, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        with httpx.Client(timeout=self.timeout) as client:
            return self._handle(
                client.post(self._url(), json=self._body(kwargs), headers=self._headers())
            )

    async def _arun(self, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            reply = await client.post(self._url(), json=self._body(kwargs), headers=self._headers())
        return self._handle(reply)

    def _url(self) -> str:
        return self.base_url.rstrip("/").removesuffix("/v1") + "/v1/amortized/tabular/predict"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @staticmethod
    def _body(arguments: dict[str, Any]) -> dict[str, Any]:
        options = {"shots": arguments.get("shots", 256), "guided": arguments.get("guided", "json")}
        return {
            "train": arguments["train"],
            "test": arguments["test"],
            "target": arguments["target"],
            "options": options,
        }

    @staticmethod
    def _handle(reply: httpx.Response) -> tuple[str, dict[str, Any]]:
        if reply.status_code >= 400:
            try:
                detail = reply.json()
                message = detail.get("error", {}).get("message") or detail.get("detail") or detail
            except ValueError:
                message = reply.text
            raise ToolException(f"tabular prediction failed ({reply.status_code}): {message}")
        result: dict[str, Any] = reply.json()
        labels = [p["label"] for p in result["predictions"]]
        fallbacks = sum(1 for p in result["predictions"] if p["provenance"] != "parsed")
        summary = f"labels: {labels}"
        if fallbacks:
            summary += f" ({fallbacks} rows from fallbacks, see the artifact)"
        return summary, result
