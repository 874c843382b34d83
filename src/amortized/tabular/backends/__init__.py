"""Where prompts run: any OpenAI-compatible endpoint, or vLLM in this process."""

from amortized.tabular.backends.base import (
    Completion,
    CompletionRequest,
    TabularBackend,
)
from amortized.tabular.backends.openai_compatible import OpenAICompatibleBackend

__all__ = ["Completion", "CompletionRequest", "OpenAICompatibleBackend", "TabularBackend"]
