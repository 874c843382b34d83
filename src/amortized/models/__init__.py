"""Models amortized builds locally: the default chat model and throwaway tiny test models.

No model hub is assumed anywhere: every model a test, demo or benchmark uses is built by
this package into a normal Hugging Face folder that ``vllm serve <path>`` loads.
Names are imported on first use, so the CLI can check a folder without loading torch.
"""

from typing import TYPE_CHECKING

from amortized._lazy import lazy_exports

if TYPE_CHECKING:
    from amortized.models.default import (
        DefaultModelRecipe,
        build_default_model,
        ensure_default_model,
    )
    from amortized.models.folder import ModelFolder, validate_model_folder
    from amortized.models.tiny import TinyModelSpec, build_tiny_model

_EXPORTS = {
    "DefaultModelRecipe": "amortized.models.default",
    "build_default_model": "amortized.models.default",
    "ensure_default_model": "amortized.models.default",
    "ModelFolder": "amortized.models.folder",
    "validate_model_folder": "amortized.models.folder",
    "TinyModelSpec": "amortized.models.tiny",
    "build_tiny_model": "amortized.models.tiny",
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


__getattr__ = lazy_exports(__name__, _EXPORTS)
