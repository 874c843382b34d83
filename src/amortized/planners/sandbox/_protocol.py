"""Length-prefixed JSON frames on dedicated pipes between the parent and a worker.

The worker's stdout/stderr are never part of the protocol (programs print). Everything the
parent reads here is untrusted: the program runs in the worker and can write to the pipe, so
frames are size-bounded and their content is validated by the parent.
"""

from __future__ import annotations

import json
import struct
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
