"""Which uid a worker runs as: never 0.

When the parent runs as root, each run gets a uid of its own from a reserved range (no
account needed), held by a lock file for the run's life. The worker switches to it before the
program loads, so the program is an unprivileged user the kernel treats as nobody in
particular: root-only files, ``/proc/sys`` and other users' processes are out of reach,
RLIMIT_NPROC is enforced (the kernel does not enforce it for root), and concurrent runs cannot
touch each other. A parent that is not root cannot change uid; its workers run as its own user
(inside bubblewrap's user namespace, where that user has no privileges on the host).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import stat
import tempfile
from dataclasses import dataclass

from amortized.planners.sandbox._types import SandboxError

UID_RANGE_ENV = "AMORTIZED_SANDBOX_UIDS"
"""``FIRST-LAST``: the uids runs may use when the parent is root."""
DEFAULT_UID_RANGE = (1_900_000_000, 1_900_065_535)
"""Far above the ranges distributions, systemd and subuid files hand out."""
_LOCK_DIR = "/run/amortized-sandbox"


@dataclass
class WorkerIdentity:
    """A uid/gid reserved for one run; ``release`` when the run is over."""

    uid: int
    gid: int
    _lock_fd: int

    def release(self) -> None:
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = -1


def uid_range() -> tuple[int, int]:
    """The configured range, or a :class:`SandboxError` saying how to write it."""
    raw = os.environ.get(UID_RANGE_ENV, "").strip()
    if not raw:
        return DEFAULT_UID_RANGE
    first_text, _, last_text = raw.partition("-")
    try:
        first, last = int(first_text), int(last_text)
    except ValueError:
        first, last = -1, -1
    if not 0 < first <= last < 2**32 - 1:
        raise SandboxError(
            f"{UID_RANGE_ENV}={raw!r} is not a range FIRST-LAST of uids above 0, e.g. "
            f"{DEFAULT_UID_RANGE[0]}-{DEFAULT_UID_RANGE[1]}"
        )
    return first, last


def _lock_dir() -> str:
    for path in (_LOCK_DIR, os.path.join(tempfile.gettempdir(), "amortized-sandbox")):
        with contextlib.suppress(OSError):
            os.makedirs(path, mode=0o700, exist_ok=True)
            info = os.lstat(path)  # not a symlink another user planted, and ours alone
            private = stat.S_IMODE(info.st_mode) & 0o022 == 0
            if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and private:
                return path
    raise SandboxError(f"cannot create a lock directory for sandbox uids ({_LOCK_DIR})")


def acquire() -> WorkerIdentity | None:
    """A free uid for one run when this process is root; None otherwise (no switch)."""
    if os.geteuid() != 0:
        return None
    first, last = uid_range()
    count = last - first + 1
    directory = _lock_dir()
    start = random.randrange(count)
    for step in range(min(count, 4096)):
        uid = first + (start + step) % count
        fd = os.open(
            os.path.join(directory, f"{uid}.lock"),
            os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
            0o600,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        return WorkerIdentity(uid=uid, gid=uid, _lock_fd=fd)
    raise SandboxError(f"no free sandbox uid in {first}-{last} (set {UID_RANGE_ENV})")
