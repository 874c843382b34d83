"""A program library keyed by task signature, so later requests reuse a validated program.

One JSON file per signature under the library folder; writes are atomic (temp file and
``os.replace``) under an advisory lock, so concurrent planners never lose an entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from amortized.config import cache_dir

LIBRARY_DIR_ENV = "AMORTIZED_PROGRAM_LIBRARY"
"""Overrides where the program library lives (default: ``<cache>/planners/library``)."""


def default_library_dir() -> Path:
    env = os.environ.get(LIBRARY_DIR_ENV)
    return Path(env).expanduser() if env else cache_dir() / "planners" / "library"


def program_id(source: str) -> str:
    """A content address: the same program text always gets the same id."""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ProgramEntry:
    """A program and the evidence that it works for one task signature."""

    signature: str
    source: str
    entrypoint: str
    mean_score: float
    success_rate: float
    instances_evaluated: int
    strategy: str = ""
    model: str = ""
    created_at: float = field(default_factory=time.time)
    program_id: str = ""

    def __post_init__(self) -> None:
        if not self.program_id:
            object.__setattr__(self, "program_id", program_id(self.source))

    def validated(self, min_success_rate: float, min_instances: int) -> bool:
        return self.success_rate >= min_success_rate and self.instances_evaluated >= min_instances


class ProgramLibrary:
    """Validated programs on disk, best first per signature."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_library_dir()

    def _file(self, signature: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", signature).strip("_") or "task"
        digest = hashlib.sha256(signature.encode()).hexdigest()[:8]
        return self.root / f"{slug}-{digest}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self, signature: str) -> list[ProgramEntry]:
        path = self._file(signature)
        if not path.exists():
            return []
        data: list[dict[str, Any]] = json.loads(path.read_text())
        return [ProgramEntry(**item) for item in data]

    def entries(self, signature: str) -> list[ProgramEntry]:
        """Every stored program for ``signature``, best mean score first."""
        return sorted(self._read(signature), key=lambda e: (-e.mean_score, -e.success_rate))

    def best(
        self, signature: str, *, min_success_rate: float = 0.0, min_instances: int = 1
    ) -> ProgramEntry | None:
        """The best program that meets the bar, or ``None`` (then the LLM is needed)."""
        for entry in self.entries(signature):
            if entry.validated(min_success_rate, min_instances):
                return entry
        return None

    def get(self, program: str) -> ProgramEntry | None:
        """Look a program up by id across all signatures."""
        if not self.root.exists():
            return None
        for path in sorted(self.root.glob("*.json")):
            for item in json.loads(path.read_text()):
                if item.get("program_id") == program:
                    return ProgramEntry(**item)
        return None

    def add(self, entry: ProgramEntry) -> None:
        """Store ``entry``; a re-evaluated program replaces its older record."""
        with self._locked():
            kept = [e for e in self._read(entry.signature) if e.program_id != entry.program_id]
            kept.append(entry)
            path = self._file(entry.signature)
            fd, temp = tempfile.mkstemp(dir=self.root, prefix=".entry-", suffix=".json")
            with os.fdopen(fd, "w") as handle:
                json.dump([asdict(e) for e in kept], handle, indent=1)
            os.replace(temp, path)
