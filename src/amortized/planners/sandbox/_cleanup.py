"""Removing a directory tree a hostile program may have shaped, without ever raising.

Workers cannot create files (the seccomp filter refuses every open for writing), so this is
defence in depth for where the filter is missing. It never recurses (a 100,000-deep tree is
fine), never follows a symlink, holds one directory descriptor at a time (no descriptor
exhaustion, no path length limit), and makes unreadable directories readable when it owns them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile

logger = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(name: str, dir_fd: int | None) -> int:
    """A descriptor for directory ``name``, made writable so its entries can go."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        os.chmod(name, 0o700, dir_fd=dir_fd, follow_symlinks=False)
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o700)
    return fd


def _first_subdirectory(fd: int) -> str | None:
    """Unlink every non-directory in ``fd``; the name of one subdirectory left, if any."""
    with os.scandir(fd) as entries:
        names = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
    for name, is_dir in names:
        if is_dir:
            return name
        os.unlink(name, dir_fd=fd)
    return None


def _remove(path: str) -> None:
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(path)
        return
    fd = _open_dir(path, None)
    depth: list[str] = []
    try:
        while True:
            child = _first_subdirectory(fd)
            if child is not None:
                child_fd = _open_dir(child, fd)
                os.close(fd)
                fd = child_fd
                depth.append(child)
                continue
            if not depth:
                break
            parent_fd = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent_fd
            os.rmdir(depth.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


def remove_tree(path: str) -> str | None:
    """Remove ``path`` and everything under it; None when done, else why not (logged)."""
    try:
        _remove(path)
    except FileNotFoundError:
        return None
    except Exception as exc:  # a cleanup must never end the run it cleans up after
        message = f"could not remove the sandbox directory {path}: {exc}"
        logger.warning(message)
        return message
    return None


def make_private_dir(prefix: str) -> str:
    """A new, empty, read-only working directory for one weak-mode run."""
    path = os.path.realpath(tempfile.mkdtemp(prefix=prefix))
    with contextlib.suppress(OSError):
        os.chmod(path, 0o555)
    return path
