"""One sentence for every way a call to the server can fail, naming the cause and the fix.

Servers answer errors in several shapes (OpenAI's ``{"error": {"message": ...}}``, vLLM's
``{"error": "Unauthorized"}``, FastAPI's ``{"detail": ...}``, plain text), so the text is
extracted defensively and cut; the status decides what the sentence says to do.
"""

import json
from typing import Any

import httpx

_MAX_DETAIL = 500


def error_detail(body: Any) -> str:
    """The human part of an error body of any shape, at most 500 characters."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode(errors="replace")
    if isinstance(body, str):
        raw: str = body
        try:
            body = json.loads(raw)
        except ValueError:
            return raw.strip()[:_MAX_DETAIL]
    text: Any = body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            text = error.get("message") or error
        elif error:
            text = error
        elif "detail" in body:
            text = body["detail"]
        elif "message" in body:
            text = body["message"]
    if isinstance(text, list) and all(isinstance(i, dict) and "msg" in i for i in text):
        text = "; ".join(  # FastAPI's validation errors
            f"{'.'.join(str(p) for p in item.get('loc', ()))}: {item['msg']}" for item in text
        )
    message = text if isinstance(text, str) else json.dumps(text, default=str)
    return message.strip()[:_MAX_DETAIL]


def http_failure(who: str, url: str, status: int, body: Any) -> str:
    """Why a request to ``url`` answered ``status``, and what to do about it."""
    detail = error_detail(body)
    suffix = f": {detail}" if detail else ""
    if status == 401:
        return (
            f"{who}: the server refused the API key (401 Unauthorized){suffix}; pass the key "
            "the server was started with (api_key=, --api-key or OPENAI_API_KEY)"
        )
    if status == 403:
        return f"{who}: the server forbids this request (403 Forbidden){suffix}"
    if status == 404:
        return (
            f"{who}: {url} does not exist on this server (404){suffix}; check the base URL "
            "and that the server is `amortized serve` (or vLLM with VLLM_PLUGINS=amortized)"
        )
    if status == 429:
        return f"{who}: the server is rate limiting (429){suffix}; retry later"
    if status >= 500:
        return f"{who}: the server failed ({status}){suffix}"
    return f"{who}: the server rejected the request ({status}){suffix}"


def transport_failure(who: str, url: str, error: BaseException, timeout: float | None) -> str:
    """Why no answer came from ``url`` at all."""
    if isinstance(error, httpx.TimeoutException | TimeoutError):
        limit = f" within {timeout:g} s" if timeout else ""
        return f"{who}: no answer from {url}{limit}; the server is busy or the work is too big"
    if isinstance(error, httpx.ConnectError | ConnectionRefusedError):
        return f"{who}: cannot connect to {url} ({error}); is the server running at that address?"
    return f"{who}: the request to {url} failed ({type(error).__name__}: {error})"
