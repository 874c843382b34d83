"""The endpoint plugin and capability registry, on a plain FastAPI app (no engine needed)."""

from argparse import Namespace

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from starlette.datastructures import State

from amortized.errors import AmortizedError
from amortized.serving.capabilities import Capability, enabled_capabilities
from amortized.serving.plugin import AmortizedEndpointPlugin


def _echo_capability(calls: list[str]) -> Capability:
    def make_router() -> APIRouter:
        router = APIRouter()

        @router.get("/v1/amortized/echo/ping")
        async def ping() -> dict[str, str]:
            return {"pong": "yes"}

        return router

    async def init_state(engine_client, state: State, args: Namespace) -> None:
        calls.append(f"init:{engine_client}")
        state.echo_ready = True

    return Capability("echo", "answers ping", make_router, init_state)


def test_selection_parses_names_and_rejects_unknown():
    a = Capability("a", "", APIRouter)
    b = Capability("b", "", APIRouter)
    assert enabled_capabilities([a, b], "all") == [a, b]
    assert enabled_capabilities([a, b], " b ,") == [b]
    with pytest.raises(AmortizedError, match=r"unknown capabilities zzz \(available: a, b\)"):
        enabled_capabilities([a, b], "a,zzz")


async def test_plugin_mounts_capabilities_and_reports_them():
    calls: list[str] = []
    plugin = AmortizedEndpointPlugin([_echo_capability(calls)])
    app = FastAPI()
    plugin.attach_router(app)
    with TestClient(app) as client:
        assert client.get("/v1/amortized/info").status_code == 503
        args = Namespace(model="/models/m", served_model_name=["m1", "m2"])
        await plugin.init_state(None, app.state, args)
        info = client.get("/v1/amortized/info").json()
        assert client.get("/v1/amortized/echo/ping").json() == {"pong": "yes"}
    assert calls == ["init:None"]
    assert app.state.echo_ready
    assert [m["id"] for m in info["models"]] == ["m1", "m2"]
    assert {m["root"] for m in info["models"]} == {"/models/m"}
    assert info["capabilities"] == [
        {"name": "echo", "summary": "answers ping", "routes": ["/v1/amortized/echo/ping"]}
    ]
    assert info["vllm_version"].startswith("0.32")


def test_plugin_satisfies_vllms_protocol():
    from vllm.plugins.endpoint_plugins.interface import EndpointPlugin

    assert isinstance(AmortizedEndpointPlugin([]), EndpointPlugin)
