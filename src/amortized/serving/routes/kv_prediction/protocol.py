"""Pydantic models of the KV-prediction route."""

from typing import Any, Literal

from pydantic import BaseModel, Field


class KVPredictionInfo(BaseModel):
    """What ``GET /v1/amortized/kv-prediction`` returns."""

    object: Literal["kv_prediction"] = "kv_prediction"
    enabled: bool
    predictor: str | None = None
    fingerprint: str | None = None
    base_model: str | None = None
    auxiliary: str | None = Field(default=None, description="how the auxiliary model was made")
    layer_map: list[int] | None = None
    min_prompt_tokens: int | None = None
    default_on: bool | None = Field(
        default=None, description="prediction unless a request opts out"
    )
    training_steps: int | None = None
    last_eval: dict[str, Any] | None = None
    how_to: str = Field(description="how to opt a request in or out, or to turn this on")
