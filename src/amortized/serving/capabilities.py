"""The registry of server capabilities, so each feature plugs into one endpoint plugin.

A capability contributes an ``APIRouter`` (paths under ``/v1/amortized/``, so vLLM's
``--api-key`` guards them) and optional per-app state. ``AMORTIZED_CAPABILITIES``
(comma-separated names, default: all) chooses which ones a server exposes.
"""

import os
from argparse import Namespace
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.datastructures import State

from amortized.errors import AmortizedError

CAPABILITIES_ENV = "AMORTIZED_CAPABILITIES"

InitState = Callable[[Any, State, Namespace], Awaitable[None]]
"""``(engine_client | None, app.state, args)``; engine_client is None on render-only servers."""


@dataclass(frozen=True)
class Capability:
    """One feature's HTTP surface: a name, a one-line summary, routes and state set-up."""

    name: str
    summary: str
    make_router: Callable[[], APIRouter]
    init_state: InitState | None = None
    install: Callable[[FastAPI], None] | None = None
    """Optional app-wide hook (e.g. a middleware in front of vLLM's own routes)."""


def builtin_capabilities() -> tuple[Capability, ...]:
    """Capabilities shipped with amortized, in the order ``/v1/amortized/info`` lists them."""
    from amortized.serving.routes.kv_prediction import api_router as kv_prediction
    from amortized.serving.routes.planners import api_router as planners
    from amortized.serving.routes.realtime import api_router as realtime
    from amortized.serving.routes.tabular import api_router as tabular

    return (
        Capability(
            name="kv_prediction",
            summary="KV-prediction prefill: an auxiliary model predicts the prompt's KV cache "
            "(arXiv 2410.08391)",
            make_router=kv_prediction.make_router,
            init_state=kv_prediction.init_state,
            install=kv_prediction.install,
        ),
        Capability(
            name="realtime",
            summary="Think-while-listening sessions: the model reasons while user text streams "
            "in and answers at once (arXiv 2510.05150)",
            make_router=realtime.make_router,
            init_state=realtime.init_state,
        ),
        Capability(
            name="planners",
            summary="Code-policy grid planners: an LLM writes a policy program, refined with "
            "feedback and reused across instances (IPP, arXiv 2505.10749)",
            make_router=planners.make_router,
            init_state=planners.init_state,
        ),
        Capability(
            name="tabular",
            summary="Many-shot tabular classification by in-context learning "
            "(MachineLearningLM, arXiv 2509.06806)",
            make_router=tabular.make_router,
            init_state=tabular.init_state,
        ),
    )


def enabled_capabilities(
    available: Sequence[Capability] | None = None,
    selection: str | None = None,
) -> list[Capability]:
    """Capabilities named by ``selection`` (or ``$AMORTIZED_CAPABILITIES``); all by default."""
    if available is None:
        available = builtin_capabilities()
    raw = os.environ.get(CAPABILITIES_ENV, "all") if selection is None else selection
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if not names or names == ["all"]:
        return list(available)
    known = {c.name: c for c in available}
    unknown = [n for n in names if n not in known]
    if unknown:
        choices = ", ".join(sorted(known)) or "none are installed"
        raise AmortizedError(
            f"{CAPABILITIES_ENV} names unknown capabilities {', '.join(unknown)} "
            f"(available: {choices})"
        )
    return [known[n] for n in names]
