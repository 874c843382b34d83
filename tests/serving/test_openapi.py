"""OpenAPI says what amortized's routes answer: 400 and 401 in OpenAI's error shape (never
FastAPI's 422), a summary and a description for every operation, typed request bodies."""

from typing import Any

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


@pytest.mark.parametrize("route", ["tabular/predict", "planners/solve", "realtime/simulate"])
def test_a_body_that_is_not_utf8_is_a_400_in_the_documented_shape(
    live_server: ServerProcess, route: str
) -> None:
    # FastAPI refuses it with Starlette's HTTPException, which vLLM's handler does not catch:
    # schemathesis found {"detail": "There was an error parsing the body"} here.
    reply = httpx.post(
        f"{live_server.base_url}/amortized/{route}",
        content=b"\xff\xfe{",
        headers={"Authorization": "Bearer test-key", "Content-Type": "application/json"},
        timeout=30,
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == 400


def _schema(spec: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = spec["components"]["schemas"][name]
    return schema


def _nullable(property_schema: dict[str, Any]) -> bool:
    return {"type": "null"} in property_schema.get("anyOf", [])


def test_simulate_session_settings_document_the_configs_nulls_and_limits(
    live_server: ServerProcess,
) -> None:
    # OpenAPI offered null and any number for every setting; the server refused most of those
    # with a 400 (schemathesis sent {"session": {"answer": null}} and a negative max_tokens).
    spec = httpx.get(f"{live_server.root_url}/openapi.json", timeout=30).json()
    session = _schema(spec, "SessionSettings")["properties"]
    answer = _schema(spec, "AnswerSettings")["properties"]
    assert not _nullable(session["answer"])
    assert not _nullable(answer["max_tokens"])
    assert (answer["max_tokens"]["minimum"], answer["max_tokens"]["maximum"]) == (1, 32768)
    assert _nullable(session["instructions"])
    assert _nullable(answer["seed"])
    url = f"{live_server.base_url}/amortized/realtime/simulate"
    headers = {"Authorization": "Bearer test-key"}
    quiet = {"thinking": {"budget_tokens": 0}, "answer": {"max_tokens": 2, "seed": None}}
    taken = {"text": "hi", "session": {**quiet, "instructions": None}}
    reply = httpx.post(url, json=taken, headers=headers, timeout=60)
    assert reply.status_code == 200, reply.text
    refused = {"text": "hi", "session": {"answer": None}}
    reply = httpx.post(url, json=refused, headers=headers, timeout=60)
    assert reply.status_code == 400, reply.text
    assert "answer" in reply.json()["error"]["message"]
