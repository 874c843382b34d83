"""Schemathesis over amortized's HTTP operations on the live server: whatever it sends (valid
or not), no 5xx, and every answer's status, content type and body are ones OpenAPI documents.

Cases come from schemathesis' Hypothesis strategies (``APIOperation.as_strategy``) rather
than ``schemathesis.pytest.from_fixture``, whose lazy parametrization reads a private pytest
attribute (``Node._nodeid``) that pytest 9.2 no longer has. Bounded so the file takes about a
minute: few examples per operation, no shrinking, derandomized, and the knobs that make one
request slow by design capped (:data:`BOUNDS`).
"""

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import BaseSchema, Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from amortized.serving.paths import ROUTE_PREFIX
from amortized.serving.process import ServerProcess
from tests.conftest import API_KEY

pytestmark = pytest.mark.server

MAX_EXAMPLES = 10
"""Generated cases per operation and mode."""
REQUEST_TIMEOUT_S = 60.0
"""A bounded request answers in seconds; a timeout means a route ignored its limits."""
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)


def _cap_number(container: dict[str, Any], key: str, limit: float, default: float) -> None:
    """``container[key]`` (``default`` when absent) at most ``limit`` when it is a number;
    other types stay: they are invalid input, refused with a 400 before any work."""
    value = container.get(key, default)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > limit:
        container[key] = type(value)(limit)


def _cap_list(container: dict[str, Any], key: str, limit: int) -> None:
    value = container.get(key)
    if isinstance(value, list) and len(value) > limit:
        container[key] = value[:limit]


def _nested(body: dict[str, Any], key: str, *, create: bool = True) -> dict[str, Any]:
    """``body[key]`` as a copy to edit, made empty when absent and ``create``; a throwaway
    dict when it is not an object (that input is refused anyway)."""
    value = body.get(key, {} if create else None)
    if not isinstance(value, dict):
        return {}
    body[key] = copy = dict(value)
    return copy


def _bound_simulate(body: dict[str, Any]) -> None:
    """``realtime/simulate`` paces its text at ``words_per_second`` (up to 300 s a request)
    and thinks and answers 256 tokens each by default: at most 100 characters spoken in about
    a quarter of a second, 32 thinking and 16 answer tokens."""
    text = body.get("text")
    if isinstance(text, str):
        body["text"] = text = text[:100]
        rate = body.get("words_per_second", 3.0)
        if isinstance(rate, int | float) and not isinstance(rate, bool) and rate >= 0.1:
            body["words_per_second"] = min(1000.0, max(float(rate), 4.0 * len(text.split(" "))))
    session = _nested(body, "session")
    _cap_number(_nested(session, "thinking"), "budget_tokens", 32, 256)
    _cap_number(_nested(session, "answer"), "max_tokens", 16, 256)


def _bound_planners(body: dict[str, Any]) -> None:
    """``planners/solve`` runs up to 20 LLM rounds, then the sandbox over up to 20000
    instances: one round, two instances, at most 10 s of planning."""
    _cap_number(body, "rounds", 1, 3)
    _cap_number(body, "train_instances", 2, 20)
    _cap_number(body, "wall_time_s", 10.0, 10.0)
    _cap_list(body, "instances", 2)
    _cap_number(_nested(body, "generate", create=False), "count", 2, 2)


def _bound_tabular(body: dict[str, Any]) -> None:
    """``tabular/predict`` runs a prompt per seed (two by default) and block of test rows:
    one seed, eight training and four test rows."""
    _cap_list(body, "train", 8)
    _cap_list(body, "test", 4)
    options = _nested(body, "options")
    options.setdefault("seeds", [40])
    _cap_list(options, "seeds", 1)


BOUNDS: dict[str, Callable[[dict[str, Any]], None]] = {
    "/realtime/simulate": _bound_simulate,
    "/planners/solve": _bound_planners,
    "/tabular/predict": _bound_tabular,
}
"""Per route, what keeps one request to seconds (``info`` and ``kv-prediction`` are cheap
GETs). Only the sizes are capped: types and every other field stay as generated."""

KNOWN_ENVS = ("GRASP", "MiniGrid-DoorKey-8x8-v0")


def _steer_planners(body: dict[str, Any]) -> None:
    """Two in three tasks name a real environment, and each request gives instances or
    ``generate`` (not both, not neither): else every case stops at the 400 before planning."""
    task = _nested(body, "task")
    env = task.get("env")
    if isinstance(env, str):
        task["env"] = (*KNOWN_ENVS, env)[len(env) % 3]
    if body.get("instances") is not None:
        body.pop("generate", None)
    elif body.get("generate") is None:
        body["generate"] = {"count": 1}


def _label(value: Any, index: int) -> Any:
    """A training row's label; two classes by row parity where it has none."""
    return index % 2 if value is None else value


def _steer_tabular(body: dict[str, Any]) -> None:
    """Every training row gets the first row's features (missing cells null) and a label,
    every test row the features: else every case stops at the 400 before prompting."""
    train, test, target = body.get("train"), body.get("test"), body.get("target")
    if not (isinstance(train, list) and isinstance(test, list) and isinstance(target, str)):
        return
    if not train or not all(isinstance(row, dict) for row in [*train, *test]):
        return
    features = [column for column in train[0] if column != target] or ["x"]
    body["train"] = [
        {**{c: row.get(c) for c in features}, target: _label(row.get(target), index)}
        for index, row in enumerate(train)
    ]
    body["test"] = [{c: row.get(c) for c in features} for row in test]


STEERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "/planners/solve": _steer_planners,
    "/tabular/predict": _steer_tabular,
}
"""For valid (positive) cases: what random JSON almost never gets right and the schema
cannot say, so the generated values reach the route's real work."""

VALID_BODIES: dict[str, dict[str, Any]] = {
    "/realtime/simulate": {
        "text": "what is the capital of France",
        "words_per_second": 50,
        "session": {"thinking": {"budget_tokens": 8}, "answer": {"max_tokens": 8}},
    },
    "/planners/solve": {
        "task": {"env": "GRASP"},
        "generate": {"count": 2},
        "rounds": 1,
        "train_instances": 2,
        "wall_time_s": 20,
    },
    "/tabular/predict": {
        "train": [{"x": 1, "y": "a"}, {"x": 2, "y": "b"}, {"x": 3, "y": "a"}],
        "test": [{"x": 2}],
        "target": "y",
        "options": {"shots": 3, "seeds": [0]},
    },
}
"""A request each POST route must answer with a 200: random input rarely gets past its
checks (a known environment, a target among the columns), and the 200 must match OpenAPI
too."""

OPERATIONS = [
    ("GET", "/info"),
    ("GET", "/kv-prediction"),
    ("POST", "/realtime/simulate"),
    ("POST", "/planners/solve"),
    ("POST", "/tabular/predict"),
]
FUZZED = [
    pytest.param(method, route, mode, id=f"{method} {route} {mode.value}")
    for method, route in OPERATIONS
    for mode in GenerationMode
    # A GET without parameters has no input to get wrong.
    if method == "POST" or mode is GenerationMode.POSITIVE
]


@pytest.fixture(scope="module")
def amortized_api(live_server: ServerProcess) -> BaseSchema:
    """The server's own OpenAPI document, cut down to amortized's HTTP operations (the
    WebSocket is not in OpenAPI)."""
    config = schemathesis.Config.from_dict(
        {"base-url": live_server.root_url, "request-timeout": REQUEST_TIMEOUT_S}
    )
    schema = schemathesis.openapi.from_url(
        f"{live_server.root_url}/openapi.json", config=config, timeout=30
    )
    return schema.include(path_regex=f"^{ROUTE_PREFIX}/")


def call_and_validate(case: Case[Any], *, steer: bool = False) -> int:
    """Send ``case`` (bounded, and steered if asked) with the API key, run :data:`CHECKS`;
    the status code."""
    route = case.operation.path.removeprefix(ROUTE_PREFIX)
    if isinstance(case.body, dict):
        body = dict(case.body)
        for edit in (STEERS.get(route) if steer else None, BOUNDS.get(route)):
            if edit is not None:
                edit(body)
        case.body = body
    return int(case.call_and_validate(headers=AUTH, checks=CHECKS).status_code)


def test_every_amortized_operation_is_fuzzed(amortized_api: BaseSchema) -> None:
    documented = {
        (method.upper(), path)
        for path, operations in amortized_api.raw_schema["paths"].items()
        if path.startswith(f"{ROUTE_PREFIX}/")
        for method in operations
    }
    assert documented == {(method, ROUTE_PREFIX + route) for method, route in OPERATIONS}


@pytest.mark.parametrize(("method", "route", "mode"), FUZZED)
def test_generated_requests_answer_as_documented(
    amortized_api: BaseSchema, method: str, route: str, mode: GenerationMode
) -> None:
    operation = amortized_api[ROUTE_PREFIX + route][method]
    statuses: list[int] = []

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Case[Any]) -> None:
        statuses.append(call_and_validate(case, steer=mode is GenerationMode.POSITIVE))

    fuzz()
    assert statuses


@pytest.mark.parametrize("route", VALID_BODIES)
def test_a_valid_request_answers_200_as_documented(amortized_api: BaseSchema, route: str) -> None:
    case = amortized_api[ROUTE_PREFIX + route]["POST"].Case(body=VALID_BODIES[route])
    assert call_and_validate(case) == 200
