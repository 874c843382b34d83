"""Which URLs the server may send requests to on a client's behalf: none unless allowed.

A route that takes an endpoint from the request body (``planners/solve``'s ``llm.base_url``)
would otherwise let any client make the server request any URL: an internal admin page, a
cloud metadata service. The operator lists the endpoints they allow, as URL prefixes, with
``amortized serve --allow-llm-url URL`` (or ``AMORTIZED_ALLOWED_LLM_URLS``, comma-separated).
"""

import os
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from amortized.errors import AmortizedError

ALLOWED_LLM_URLS_ENV = "AMORTIZED_ALLOWED_LLM_URLS"


def _parts(url: str) -> tuple[str, str, int, str]:
    """Scheme, lower-case host, port (with the scheme's default) and path without a slash."""
    split = urlsplit(url.strip())
    if split.scheme not in ("http", "https") or not split.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL with a host")
    if split.username or split.password:
        raise ValueError(f"{url!r} carries credentials; pass the key separately")
    port = split.port or (443 if split.scheme == "https" else 80)
    return split.scheme, split.hostname.lower(), port, split.path.rstrip("/")


def allowed_llm_urls(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The allowed prefixes from the environment; a malformed one is an :class:`AmortizedError`."""
    raw = (os.environ if environ is None else environ).get(ALLOWED_LLM_URLS_ENV, "")
    prefixes = tuple(p.strip() for p in raw.split(",") if p.strip())
    for prefix in prefixes:
        try:
            _parts(prefix)
        except ValueError as error:
            raise AmortizedError(f"--allow-llm-url / {ALLOWED_LLM_URLS_ENV}: {error}") from error
    return prefixes


def is_allowed(url: str, prefixes: Sequence[str]) -> bool:
    """Whether ``url`` is one of ``prefixes`` or below one (same scheme, host and port)."""
    try:
        scheme, host, port, path = _parts(url)
    except ValueError:
        return False
    for prefix in prefixes:
        p_scheme, p_host, p_port, p_path = _parts(prefix)
        same_origin = (scheme, host, port) == (p_scheme, p_host, p_port)
        if same_origin and (path == p_path or path.startswith(p_path + "/")):
            return True
    return False
