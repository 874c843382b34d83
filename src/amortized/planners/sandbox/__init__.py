"""A hardened sandbox for LLM-written policy programs: load once, call on many inputs.

The sandbox only runs code and contains it. Every returned value is untrusted data: the caller
(the trusted parent) validates and scores it, and never executes it.
"""

from amortized.planners.sandbox._sandbox import WEAK_MODE_ENV, Sandbox, bubblewrap_available
from amortized.planners.sandbox._types import (
    CallResult,
    CallStatus,
    ProgramRun,
    SandboxError,
    SandboxLimits,
)

__all__ = [
    "WEAK_MODE_ENV",
    "CallResult",
    "CallStatus",
    "ProgramRun",
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
    "bubblewrap_available",
]
