"""Models amortized builds locally: the default chat model and throwaway tiny test models.

No model hub is assumed anywhere: every model a test, demo or benchmark uses is built by
this package into a normal Hugging Face folder that ``vllm serve <path>`` loads.
Names are imported on first use, so the CLI can check a folder without loading torch.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amortized.models.default import (
        DefaultModelRecipe,
        build_default_model,
        ensure_default_model,
    )
    from amortized.models.folder import ModelFolder, validate_model_folder
    from amortized.models.tiny import TinyModelSpec, build_tiny_model

_EXPORTS = {
    "DefaultModelRecipe": "default",
    "build_default_model": "default",
    "ensure_default_model": "default",
    "ModelFolder": "folder",
    "validate_model_folder": "folder",
    "TinyModelSpec": "tiny",
    "build_tiny_model": "tiny",
}

__all__ = [
    "DefaultModelRecipe",
    "ModelFolder",
    "TinyModelSpec",
    "build_default_model",
    "build_tiny_model",
    "ensure_default_model",
    "validate_model_folder",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"amortized.models.{_EXPORTS[name]}"), name)
