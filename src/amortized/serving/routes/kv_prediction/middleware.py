"""ASGI middleware that applies the KV-prediction request policy to OpenAI request bodies.

It resolves per-request opt-in/out and salts predicted requests into their own prefix-cache
namespace before vLLM parses the body (see ``kv_prediction.policy`` for why). On a server
without a predictor, a request that asks for prediction is refused (400) rather than
silently served exactly.
"""

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from amortized.kv_prediction.policy import KV_PREDICTION_PARAM, PolicyError
from amortized.serving.routes.errors import RouteErrorBody, RouteErrorResponse
from amortized.serving.routes.kv_prediction.serving import ENABLE_HINT

SERVICE_STATE = "amortized_kv_prediction"
GUARDED_PATHS = frozenset({"/v1/completions", "/v1/chat/completions"})


class KVPredictionMiddleware:
    """Rewrites POST bodies of the completion routes when KV prediction is on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = None
        guarded = scope["type"] == "http" and scope.get("method") == "POST"
        if guarded and scope.get("path") in GUARDED_PATHS:
            service = getattr(scope["app"].state, SERVICE_STATE, None)
        if service is None:
            await self.app(scope, receive, send)
            return
        policy = getattr(service, "policy", None)
        raw = await _read_body(receive)
        body: Any = None
        if policy is not None or KV_PREDICTION_PARAM.encode() in raw:
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                body = None
        if policy is None:
            if _asks_for_prediction(body):
                param = f"kv_transfer_params.{KV_PREDICTION_PARAM}"
                message = (
                    f"this server has no KV predictor, so {param}: true cannot be honoured; "
                    f"{ENABLE_HINT}, or drop the option"
                )
                await _send_error(send, message, param)
                return
        elif isinstance(body, dict):
            try:
                raw = json.dumps(policy.apply(body)).encode()
            except PolicyError as exc:
                await _send_error(send, str(exc), exc.param)
                return
        await self.app(_with_length(scope, len(raw)), _replay(raw, receive), send)


def _asks_for_prediction(body: Any) -> bool:
    params = body.get("kv_transfer_params") if isinstance(body, dict) else None
    return isinstance(params, dict) and params.get(KV_PREDICTION_PARAM) is True


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, downstream: Receive) -> Receive:
    """Hand the (rewritten) body over once, then pass on later messages (disconnects)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await downstream()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _with_length(scope: Scope, length: int) -> Scope:
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(length).encode()))
    return {**scope, "headers": headers}


async def _send_error(send: Send, message: str, param: str | None) -> None:
    payload = RouteErrorResponse(
        error=RouteErrorBody(message=message, param=param)
    ).model_dump_json()
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload.encode()})
