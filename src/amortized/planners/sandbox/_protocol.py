"""Length-prefixed JSON frames on dedicated pipes between the parent and a worker.

The worker's stdout/stderr are never part of the protocol (programs print). Everything the
parent reads here is untrusted: the program runs in the worker and can write to the pipe, so
frames are size-bounded and their content is validated by the parent.
"""

from __future__ import annotations

import json
import re
import struct
import sys
from typing import Any

HEADER = struct.Struct(">I")
"""4-byte big-endian payload length."""

MAX_VALUE_BYTES = 1 << 20
"""A call's return value larger than this (as JSON) is an error, not a result."""

INPUT_PREFIX = b'{"i":'
"""Input frames are built by hand (``{"i":N,"x":<json>}``) so inputs are encoded only once."""


class ProtocolError(Exception):
    """A frame that is too large or not the JSON object expected: the worker is not trusted."""


def frame(payload: bytes) -> bytes:
    """``payload`` with its length header."""
    return HEADER.pack(len(payload)) + payload


def encode(message: dict[str, Any]) -> bytes:
    """A message dict as one frame."""
    return frame(json.dumps(message, separators=(",", ":")).encode())


def input_frame(index: int, encoded_input: bytes) -> bytes:
    """The frame asking the worker to call the program on one (already encoded) input."""
    return frame(b'%s%d,"x":%s}' % (INPUT_PREFIX, index, encoded_input))


class FrameReader:
    """Incremental decoder for a byte stream of frames, each at most ``max_frame`` bytes."""

    def __init__(self, max_frame: int) -> None:
        self._max = max_frame
        self._buffer = bytearray()
        self._broken: str | None = None

    def feed(self, data: bytes) -> tuple[list[bytes], str | None]:
        """Add bytes read from the pipe; the payloads now complete, then what broke, if
        anything (an oversized frame): frames before the bad one still count, in order."""
        if self._broken is not None:
            return [], self._broken
        self._buffer += data
        payloads: list[bytes] = []
        start = 0
        while len(self._buffer) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buffer, start)
            if size > self._max:
                self._broken = f"frame of {size} bytes exceeds the {self._max}-byte limit"
                self._buffer.clear()
                return payloads, self._broken
            end = start + HEADER.size + size
            if len(self._buffer) < end:
                break
            payloads.append(bytes(self._buffer[start + HEADER.size : end]))
            start = end
        del self._buffer[:start]
        return payloads, None

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still buffered."""
        return len(self._buffer)


def decode(payload: bytes) -> dict[str, Any]:
    """A frame's payload as a JSON object, or :class:`ProtocolError`."""
    try:
        message = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"frame is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


_UNSAFE_CHARS = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff]"
)
"""Control characters (terminal escape sequences start with ESC), bidirectional overrides that
reorder what a reader sees, line separators, and lone surrogates (they cannot be encoded)."""


def safe_text(text: str) -> str:
    """``text`` with every unsafe character written as a visible escape (``\\x1b``)."""
    return _UNSAFE_CHARS.sub(lambda m: ascii(m.group())[1:-1], text)


class ValueRejected(ProtocolError):
    """A well-formed return value the parent will not keep (too big, or unencodable text)."""

    def __init__(self, reason: str, *, over_budget: bool) -> None:
        super().__init__(reason)
        self.over_budget = over_budget


def value_size(value: Any, budget: int) -> int:
    """Bytes ``value`` (decoded JSON) holds in this process, or :class:`ValueRejected` once it
    passes ``budget`` or holds a lone surrogate. Iterative: depth costs no recursion."""
    total = 0
    stack = [value]
    getsizeof = sys.getsizeof
    while stack:
        item = stack.pop()
        total += getsizeof(item)
        if total > budget:
            raise ValueRejected("the result does not fit the run's memory budget", over_budget=True)
        if isinstance(item, str):
            if _SURROGATES.search(item):
                raise ValueRejected(
                    "return value has a string with a lone surrogate (not encodable text)",
                    over_budget=False,
                )
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total


_SURROGATES = re.compile("[\ud800-\udfff]")
