"""vLLM entry points: wiring only, the logic lives in the capability routes.

Registered in pyproject under ``vllm.endpoint_plugins`` as ``amortized``; vLLM loads it
only when ``VLLM_PLUGINS`` names it (``amortized serve`` sets that).
"""

from argparse import Namespace
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import State
from starlette.exceptions import HTTPException as StarletteHTTPException

from amortized.serving.capabilities import Capability, enabled_capabilities
from amortized.serving.routes.errors import openapi_with_real_errors, starlette_http_errors
from amortized.serving.routes.info import api_router as info_router
from amortized.serving.routes.info.protocol import CapabilityInfo
from amortized.serving.routes.info.serving import InfoService, ServerFacts

PLUGIN_NAME = "amortized"


class AmortizedEndpointPlugin:
    """Adds ``/v1/amortized/info`` and every enabled capability's routes to vLLM's app."""

    name = PLUGIN_NAME
    required_tasks: tuple[str, ...] | None = None

    def __init__(self, capabilities: Sequence[Capability] | None = None) -> None:
        self.capabilities = enabled_capabilities() if capabilities is None else list(capabilities)
        self._capability_info: list[CapabilityInfo] = []

    def attach_router(self, app: FastAPI) -> None:
        """Mount the info route and each capability's router."""
        app.openapi = openapi_with_real_errors(app.openapi)  # type: ignore[method-assign]
        app.add_exception_handler(StarletteHTTPException, starlette_http_errors)
        app.include_router(info_router.make_router())
        for capability in self.capabilities:
            if capability.install is not None:
                capability.install(app)
            router = capability.make_router()
            app.include_router(router)
            paths = sorted({getattr(route, "path", "") for route in router.routes} - {""})
            self._capability_info.append(
                CapabilityInfo(name=capability.name, summary=capability.summary, routes=paths)
            )

    async def init_state(self, engine_client: Any, state: State, args: Namespace) -> None:
        """Record server facts for the info route, then let capabilities set up their state."""
        from vllm import __version__ as vllm_version

        facts = ServerFacts.from_args(args, tuple(self._capability_info), vllm_version)
        setattr(state, info_router.INFO_SERVICE_STATE, InfoService(facts))
        for capability in self.capabilities:
            if capability.init_state is not None:
                await capability.init_state(engine_client, state, args)
