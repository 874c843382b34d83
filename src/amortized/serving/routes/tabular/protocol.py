"""Pydantic models of the tabular route (rows as JSON objects, ``null`` = missing)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

JsonCell = str | int | float | bool | None


class TabularOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shots: int = Field(default=256, ge=1, le=4096, description="Demonstrations per prompt.")
    rows_per_prompt: int = Field(default=50, ge=1, le=1000)
    seeds: list[int] = Field(default=[40, 41], min_length=1, max_length=16)
    shared_demonstrations: bool = False
    guided: Literal["json", "regex", "off"] = "json"
    chat_template: bool = False


class TabularPredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: list[dict[str, JsonCell]] = Field(min_length=2, description="Rows with the target.")
    test: list[dict[str, JsonCell]] = Field(min_length=1, description="Rows to predict.")
    target: str = Field(min_length=1, description="The label column of the training rows.")
    options: TabularOptions = Field(default_factory=TabularOptions)


class RowPrediction(BaseModel):
    row: int
    label: JsonCell
    probabilities: dict[str, float]
    provenance: Literal["parsed", "logprob_fallback", "majority_fallback"]


class TabularUsage(BaseModel):
    prompts: int
    prompt_tokens: int
    cached_tokens: int
    prefill_tokens: int
    completion_tokens: int


class TabularPredictResponse(BaseModel):
    object: Literal["tabular.prediction"] = "tabular.prediction"
    classes: list[JsonCell]
    predictions: list[RowPrediction]
    columns: list[str] = Field(description="Feature columns used, in request order.")
    shots: int
    rows_per_prompt: int
    usage: TabularUsage
    warnings: list[str]
