"""Where amortized keeps its files, and the environment variables that move them."""

import os
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
"""Where ``amortized serve`` listens, and where its clients look, unless told otherwise."""

BUILT_DEFAULT_MODEL_NAME = "amortized-default"
"""The name of the tiny model amortized builds itself (``amortized models build-default``)."""

CACHE_DIR_ENV = "AMORTIZED_CACHE_DIR"
"""Overrides the cache directory (locally built models live below it)."""


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: ``override``, else ``$AMORTIZED_CACHE_DIR``, else XDG's cache."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "amortized"


def models_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Folder holding every locally built model."""
    return cache_dir(override) / "models"
