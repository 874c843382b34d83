"""LangChain tool for many-shot tabular prediction through ``/v1/amortized/tabular/predict``."""

from typing import Any, Literal

from pydantic import BaseModel, Field

from amortized.agents._http_tool import AmortizedRouteTool

JsonCell = str | int | float | bool | None


class TabularPredictionInput(BaseModel):
    train: list[dict[str, JsonCell]] = Field(
        min_length=2, description="Rows with known labels, as JSON objects (null = missing)."
    )
    test: list[dict[str, JsonCell]] = Field(min_length=1, description="Rows to label.")
    target: str = Field(description="The label column of the training rows.")
    shots: int = Field(default=256, ge=1, description="Demonstrations per prompt.")
    guided: Literal["json", "regex", "off"] = "json"


class TabularPredictionTool(AmortizedRouteTool):
    """Label rows from examples with the served model (no training; in-context learning)."""

    name: str = "tabular_predict"
    description: str = (
        "Classify table rows by showing the served model many labelled example rows. "
        "Give training rows with the target column, test rows without it, and the target "
        "name. Returns one label per test row, with class probabilities."
    )
    args_schema: type[BaseModel] = TabularPredictionInput
    route: str = "tabular/predict"

    def _body(self, arguments: dict[str, Any]) -> dict[str, Any]:
        options = {"shots": arguments.get("shots", 256), "guided": arguments.get("guided", "json")}
        return {
            "train": arguments["train"],
            "test": arguments["test"],
            "target": arguments["target"],
            "options": options,
        }

    def _summarize(self, result: dict[str, Any]) -> str:
        labels = [p["label"] for p in result["predictions"]]
        fallbacks = sum(1 for p in result["predictions"] if p["provenance"] != "parsed")
        summary = f"labels: {labels}"
        if fallbacks:
            summary += f" ({fallbacks} rows from fallbacks, see the artifact)"
        return summary
