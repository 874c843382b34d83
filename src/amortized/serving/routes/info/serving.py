"""Builds the info response from facts gathered once at start-up (no engine calls)."""

from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path

from amortized import __version__
from amortized.serving.routes.info.protocol import CapabilityInfo, InfoResponse, ServedModel
from amortized.steering.export import casal_provenance


@dataclass(frozen=True)
class ServerFacts:
    """What the info route reports; fixed for the server's lifetime."""

    vllm_version: str
    models: tuple[ServedModel, ...]
    capabilities: tuple[CapabilityInfo, ...]

    @classmethod
    def from_args(
        cls, args: Namespace, capabilities: tuple[CapabilityInfo, ...], vllm_version: str
    ) -> "ServerFacts":
        """Read served model names the way vLLM does: ``--served-model-name`` else the path."""
        root = str(getattr(args, "model", "") or "")
        names = getattr(args, "served_model_name", None) or [root]
        casal = casal_provenance(root) if root and Path(root).is_dir() else None
        models = tuple(ServedModel(id=str(n), root=root, casal=casal) for n in names)
        return cls(vllm_version, models, capabilities)


class InfoService:
    """Answers ``GET /v1/amortized/info``."""

    def __init__(self, facts: ServerFacts) -> None:
        self._facts = facts

    def info(self) -> InfoResponse:
        """The current info document."""
        return InfoResponse(
            version=__version__,
            vllm_version=self._facts.vllm_version,
            models=list(self._facts.models),
            capabilities=list(self._facts.capabilities),
        )
