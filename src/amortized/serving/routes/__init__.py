"""Thin HTTP adapters, one folder per endpoint group (protocol, serving logic, router)."""

from typing import TypeVar

from fastapi import HTTPException, Request

Service = TypeVar("Service")


def state_service(request: Request, attribute: str, kind: type[Service]) -> Service:
    """The service a capability's ``init_state`` stored; 503 until start-up has done so."""
    service = getattr(request.app.state, attribute, None)
    if not isinstance(service, kind):
        raise HTTPException(status_code=503, detail="amortized is still starting up")
    return service
