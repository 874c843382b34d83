"""The sandbox's public value types: limits in, per-call results out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any


class SandboxError(Exception):
    """The sandbox was misused (bad limits, inputs or driver) or cannot start a worker at all.

    Anything a program does wrong is a per-call :class:`CallResult` instead, never this.
    """


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits; the defaults suit grid-world policies (milliseconds per call)."""

    call_timeout_s: float = 1.0
    """Wall clock per call (per input), also for the program's module-level code (at least
    2 s there). A soft SIGALRM ends a Python loop at this limit; the parent kills the worker
    a little later if that did not work."""
    total_timeout_s: float = 120.0
    """Wall clock for the whole run; inputs not reached by then are errors."""
    cpu_time_s: int = 60
    """RLIMIT_CPU per worker process; a worker near it hands over to a fresh one between
    calls, so long runs are not cut off."""
    memory_mb: int = 1024
    """RLIMIT_AS (address space) per worker, so a memory bomb is a MemoryError."""
    file_size_mb: int = 1
    """RLIMIT_FSIZE. A second layer only: the seccomp filter lets no program create or change a
    file at all (its disk use is zero)."""
    max_processes: int = 64
    """RLIMIT_NPROC. Under a root parent every run has a uid of its own, so this bounds the
    run's processes and threads exactly; under another user it is headroom above the tasks
    that user already runs (the kernel counts them all). The seccomp filter refuses new
    processes and threads anyway, so a program gets none."""
    output_chars: int = 2000
    """Captured stdout+stderr kept per call (the rest is counted, not stored)."""
    traceback_chars: int = 2000
    """Error text kept per call (the end of a traceback, where the cause is)."""
    result_memory_mb: int = 256
    """Memory the run's accepted return values and output may take in the parent once decoded
    (a 1 MiB JSON value can take 24 MB); calls after that are errors."""
    max_restarts: int = 20
    """Worker respawns per run after crashes, hard timeouts or protocol violations; the
    inputs after that are errors ("too many worker restarts")."""

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or value < 0:
                raise SandboxError(
                    f"SandboxLimits.{spec.name} must be a finite number >= 0, got {value!r}"
                )
        for name in ("call_timeout_s", "total_timeout_s", "cpu_time_s", "memory_mb"):
            if getattr(self, name) <= 0:
                raise SandboxError(f"SandboxLimits.{name} must be > 0")


class CallStatus(StrEnum):
    """How one call ended."""

    OK = "ok"
    TIMEOUT = "timeout"
    ERROR = "error"


@dataclass(frozen=True)
class CallResult:
    """One input's outcome. ``value`` came from the program: untrusted, validate before use."""

    index: int
    status: CallStatus
    value: Any
    """The JSON-decoded return value (tuples became lists); None unless ``status`` is OK."""
    error: str | None
    """Why it is not OK: the end of a traceback, or the sandbox's reason."""
    output: str
    """The program's stdout+stderr during the call, truncated."""
    duration_s: float


@dataclass(frozen=True)
class ProgramRun:
    """A program's results over all inputs, in input order."""

    results: list[CallResult]
    load_error: str | None
    """Why the program could not be loaded (syntax error, missing entrypoint, crash at import);
    then every result is an ERROR with this message."""
    worker_starts: int
    wall_s: float
    sandboxed_by: str
    """The layers that contained it, e.g. ``bwrap+seccomp+rlimits`` or ``seccomp+rlimits``."""
    mode: str = "bubblewrap"
    """``bubblewrap`` or ``weak`` (no bubblewrap: see docs/sandbox.md for what that loses)."""
    limits: dict[str, Any] = field(default_factory=dict)
    """The limits the workers ran under, as enforced (uid, processes, memory, CPU, ...)."""

    def counts(self) -> dict[str, int]:
        """Results per status value, zeros included."""
        counts = {status.value: 0 for status in CallStatus}
        for result in self.results:
            counts[result.status.value] += 1
        return counts
