"""Response schema of ``GET /v1/amortized/info``; clients and tools reuse it."""

from typing import Any, Literal

from pydantic import BaseModel, Field


class CapabilityInfo(BaseModel):
    """A capability enabled on this server."""

    name: str
    summary: str
    routes: list[str] = Field(description="HTTP paths the capability serves")


class ServedModel(BaseModel):
    """A model name clients can pass as ``model``, and the weights it points to."""

    id: str
    root: str
    casal: dict[str, Any] | None = Field(
        default=None,
        description="Provenance when the weights are a CASAL checkpoint (steered layer, "
        "alpha, submodule, source model); null otherwise",
    )


class InfoResponse(BaseModel):
    """Versions, served models and enabled capabilities."""

    object: Literal["amortized.info"] = "amortized.info"
    package: str = "amortized"
    version: str
    vllm_version: str
    models: list[ServedModel]
    capabilities: list[CapabilityInfo]
