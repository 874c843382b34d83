"""Where prompts run, shared by the capabilities: any OpenAI-compatible endpoint, or vLLM in
this process (the server's engine or an offline ``vllm.LLM``)."""

from amortized.llm.base import (
    Completion,
    CompletionRequest,
    LLMBackend,
    Messages,
    TokenLogprobs,
)
from amortized.llm.openai_compatible import OpenAICompatibleBackend

__all__ = [
    "Completion",
    "CompletionRequest",
    "LLMBackend",
    "Messages",
    "OpenAICompatibleBackend",
    "TokenLogprobs",
]
