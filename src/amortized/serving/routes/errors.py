"""The error body every amortized route answers with, as OpenAPI should document it.

vLLM answers request errors in OpenAI's shape (``{"error": {"message", "type", "param",
"code"}}``) and turns FastAPI's validation errors into a 400 of that shape, so the 422 that
FastAPI documents by default never happens; :func:`openapi_with_real_errors` removes it.
"""

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from amortized.serving.paths import ROUTE_PREFIX


class RouteErrorBody(BaseModel):
    """OpenAI-style error detail."""

    message: str
    type: str = "BadRequestError"
    param: str | None = None
    code: int = 400


class RouteErrorResponse(BaseModel):
    """OpenAI-style error envelope, as vLLM returns it."""

    error: RouteErrorBody


_DESCRIPTIONS = {
    400: "Bad input; the message says what to fix.",
    401: "Missing or wrong API key (the server was started with --api-key).",
    403: "Not allowed by the server's operator; the message says how to allow it.",
    499: "The client left before the answer (nobody reads this).",
    502: "An endpoint the request named (and the operator allowed) failed.",
    503: "Still starting up, or the capability cannot run here; the message says why.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that can answer these statuses (and 401)."""
    statuses = sorted({401, *codes})
    return {c: {"model": RouteErrorResponse, "description": _DESCRIPTIONS[c]} for c in statuses}


def documented(summary: str, description: str, *codes: int) -> dict[str, Any]:
    """The OpenAPI keywords of an amortized operation: tag, summary, description, errors."""
    return {
        "tags": ["amortized"],
        "summary": summary,
        "description": description,
        "responses": error_responses(*codes),
    }


def openapi_with_real_errors(
    original: Callable[[], dict[str, Any]],
) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` without FastAPI's 422 on amortized's routes (they answer 400)."""

    def openapi() -> dict[str, Any]:
        schema = original()
        for path, operations in schema.get("paths", {}).items():
            if not path.startswith(ROUTE_PREFIX):
                continue
            for operation in operations.values():
                if isinstance(operation, dict):
                    operation.get("responses", {}).pop("422", None)
        return schema

    return openapi
