"""Models amortized builds locally: the default chat model and throwaway tiny test models.

No model hub is assumed anywhere: every model a test, demo or benchmark uses is built by
this package into a normal Hugging Face folder that ``vllm serve <path>`` loads.
"""

from amortized.models.default import DefaultModelRecipe, build_default_model, ensure_default_model
from amortized.models.folder import ModelFolder, validate_model_folder
from amortized.models.tiny import TinyModelSpec, build_tiny_model

__all__ = [
    "DefaultModelRecipe",
    "ModelFolder",
    "TinyModelSpec",
    "build_default_model",
    "build_tiny_model",
    "ensure_default_model",
    "validate_model_folder",
]
