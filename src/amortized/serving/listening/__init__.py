"""Think-while-listening sessions (Chronological Thinking, arXiv 2510.05150).

While user text is still arriving, the model thinks over what it has heard so far; when
the turn ends it answers at once. The core here knows nothing of HTTP and reaches vLLM
only through :class:`GenerationBackend`, so the WebSocket route, the simulate route and
benchmarks share one implementation.
"""

from amortized.serving.listening.backend import (
    GenerationBackend,
    GenerationChunk,
    GenerationRequest,
    VLLMBackend,
)
from amortized.serving.listening.config import (
    BargeIn,
    SessionConfig,
    ThinkingConfig,
    ThinkingSchedule,
)
from amortized.serving.listening.events import (
    ErrorCode,
    SessionError,
    SessionEvent,
)
from amortized.serving.listening.frame import ChatFrame, TemplateTokenizer
from amortized.serving.listening.session import ListeningSession

__all__ = [
    "BargeIn",
    "ChatFrame",
    "ErrorCode",
    "GenerationBackend",
    "GenerationChunk",
    "GenerationRequest",
    "ListeningSession",
    "SessionConfig",
    "SessionError",
    "SessionEvent",
    "TemplateTokenizer",
    "ThinkingConfig",
    "ThinkingSchedule",
    "VLLMBackend",
]
