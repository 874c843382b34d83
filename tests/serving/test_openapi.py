"""OpenAPI says what amortized's routes answer: 400 and 401 in OpenAI's error shape (never
FastAPI's 422), a summary and a description for every operation, typed request bodies."""

import httpx
import pytest

from amortized.serving.paths import ROUTE_PREFIX
from amortized.serving.process import ServerProcess

pytestmark = pytest.mark.server


def test_every_amortized_operation_documents_its_real_errors(live_server: ServerProcess) -> None:
    spec = httpx.get(f"{live_server.root_url}/openapi.json", timeout=30).json()
    operations = [
        (path, method, operation)
        for path, methods in spec["paths"].items()
        if path.startswith(ROUTE_PREFIX)
        for method, operation in methods.items()
    ]
    assert len(operations) >= 5
    for path, method, operation in operations:
        where = f"{method.upper()} {path}"
        responses = operation["responses"]
        assert "422" not in responses, where
        assert "401" in responses, where
        assert operation.get("summary"), where
        assert operation.get("description"), where
        error_ref = responses["401"]["content"]["application/json"]["schema"]["$ref"]
        assert error_ref.endswith("/RouteErrorResponse"), where
        if method == "post":
            assert "400" in responses, where
    simulate = spec["paths"][f"{ROUTE_PREFIX}/realtime/simulate"]["post"]
    body_ref = simulate["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = spec["components"]["schemas"][body_ref.rsplit("/", 1)[-1]]
    session = body["properties"]["session"]
    assert "$ref" in session or "allOf" in session  # a typed model, not a bare object


@pytest.mark.parametrize("route", ["tabular/predict", "planners/solve", "realtime/simulate"])
def test_validation_errors_are_400_in_the_documented_shape(
    live_server: ServerProcess, route: str
) -> None:
    reply = httpx.post(
        f"{live_server.base_url}/amortized/{route}",
        json={"unexpected": True},
        headers={"Authorization": "Bearer test-key"},
        timeout=30,
    )
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    unauthorized = httpx.post(f"{live_server.base_url}/amortized/{route}", json={}, timeout=30)
    assert unauthorized.status_code == 401
