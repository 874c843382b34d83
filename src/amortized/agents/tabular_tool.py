"""LangChain tool for many-shot tabular prediction through ``/v1/amortized/tabular/predict``.

Tables travel as column names plus rows of plain values: that shape survives OpenAI's strict
mode (free-form row objects become ``{}`` there) and costs few schema tokens.
"""

from typing import Annotated, Any

from pydantic import BaseModel, Field, model_validator

from amortized.agents._http_tool import AmortizedRouteTool
from amortized.serving.routes.tabular.protocol import TabularPredictResponse

Cell = str | float | bool | None
ColumnName = Annotated[str, Field(min_length=1, max_length=64)]


class TabularPredictionInput(BaseModel):
    columns: list[ColumnName] = Field(
        min_length=2, max_length=64, description="names, label column included"
    )
    target: str = Field(description="the label column")
    train: list[list[Cell]] = Field(min_length=2, description="labelled rows, a value per column")
    test: list[list[Cell]] = Field(min_length=1, description="rows to label")

    @model_validator(mode="after")
    def _rows_fit_the_columns(self) -> "TabularPredictionInput":
        if self.target not in self.columns:
            raise ValueError(f"target {self.target!r} is not one of the columns {self.columns}")
        width = len(self.columns)
        for index, row in enumerate(self.train):
            if len(row) != width:
                raise ValueError(f"train row {index} has {len(row)} values; expected {width}")
        for index, row in enumerate(self.test):
            if len(row) not in (width - 1, width):
                raise ValueError(
                    f"test row {index} has {len(row)} values; expected {width - 1} "
                    f"(or {width}, with the label's place ignored)"
                )
        return self


class TabularPredictionTool(AmortizedRouteTool):
    """Label rows from examples with the served model (no training; in-context learning)."""

    name: str = "tabular_predict"
    description: str = (
        "Classify table rows from labelled example rows. Returns a label and class "
        "probabilities per row."
    )
    args_schema: type[BaseModel] = TabularPredictionInput
    route: str = "tabular/predict"
    output_model: type[BaseModel] | None = TabularPredictResponse

    def _body(self, arguments: dict[str, Any]) -> dict[str, Any]:
        columns: list[str] = list(arguments["columns"])
        target = arguments["target"]
        features = [c for c in columns if c != target]

        def test_row(row: list[Cell]) -> dict[str, Cell]:
            if len(row) == len(columns):  # a value in the label's place: not the model's to give
                return {c: v for c, v in zip(columns, row, strict=True) if c != target}
            return dict(zip(features, row, strict=True))

        return {
            "train": [dict(zip(columns, row, strict=True)) for row in arguments["train"]],
            "test": [test_row(row) for row in arguments["test"]],
            "target": target,
        }

    def _summarize(self, result: dict[str, Any]) -> str:
        labels = [p["label"] for p in result["predictions"]]
        fallbacks = sum(1 for p in result["predictions"] if p["provenance"] != "parsed")
        summary = f"labels: {labels}"
        if fallbacks:
            summary += f" ({fallbacks} rows from fallbacks, see the artifact)"
        return summary
