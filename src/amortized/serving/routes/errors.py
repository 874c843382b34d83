"""The error body every amortized route answers with, as OpenAPI should document it.

vLLM answers request errors in OpenAI's shape (``{"error": {"message", "type", "param",
"code"}}``) and turns FastAPI's validation errors into a 400 of that shape, so the 422 that
FastAPI documents by default never happens; :func:`openapi_with_real_errors` removes it.
vLLM's handler only catches FastAPI's ``HTTPException``, not Starlette's, which FastAPI itself
raises for a body it cannot read; :func:`starlette_http_errors` answers those in the same shape.
"""

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi.exception_handlers import http_exception_handler
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

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


def status_phrase(status_code: int) -> str:
    """The error ``type`` vLLM gives a status (its reason phrase), also for non-standard ones."""
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return "Error"


async def starlette_http_errors(request: Request, exc: Exception) -> Response:
    """Starlette's ``HTTPException`` in OpenAI's shape on amortized's routes (FastAPI raises it
    for a body that is not UTF-8); other routes keep FastAPI's answer, as vLLM left them."""
    assert isinstance(exc, StarletteHTTPException)  # the class it is registered for
    if not request.url.path.startswith(ROUTE_PREFIX):
        return await http_exception_handler(request, exc)
    body = RouteErrorBody(
        message=str(exc.detail), type=status_phrase(exc.status_code), code=exc.status_code
    )
    return JSONResponse(
        RouteErrorResponse(error=body).model_dump(),
        status_code=exc.status_code,
        headers=exc.headers,
    )
