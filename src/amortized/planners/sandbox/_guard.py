"""Resource limits and a human-eval style reliability guard, applied inside the worker.

The guard runs after the worker (and any trusted driver) imported what it needs and before the
program is compiled: it removes process, signal, network and destructive file functions, refuses
imports of dangerous modules, and confines ``open``/``listdir`` to the work directory. It is a
speed bump against accidents and naive attacks, not a security boundary: Python offers many ways
around it (``object.__subclasses__()``, re-importing builtin modules). The boundaries are the
kernel's: rlimits, the seccomp filter and, where available, bubblewrap.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
import resource
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any, NoReturn

DENIED_MODULES = frozenset(
    {
        "_ctypes", "_multiprocessing", "_posixshmem", "_posixsubprocess", "_signal",
        "_socket", "_ssl", "_thread", "aiohttp", "asyncio", "bdb", "code", "concurrent",
        "ctypes", "faulthandler", "fcntl", "ftplib", "gc", "http", "httpx", "imaplib",
        "importlib", "inspect", "ipdb", "mmap", "multiprocessing", "pdb",
        "poplib", "pty", "requests", "resource", "runpy", "shutil", "signal", "smtplib",
        "socket", "socketserver", "ssl", "subprocess", "sysconfig", "telnetlib", "tempfile",
        "termios", "threading", "tty", "urllib", "urllib3", "webbrowser", "xmlrpc",
    }
)  # fmt: skip
"""Top-level modules a program may not import. Not ``_io`` or ``posix``: the interpreter's C
code imports those through ``builtins.__import__`` (``_io`` for every module it loads)."""

HIDDEN_MODULES = frozenset(
    {
        "_ctypes", "_multiprocessing", "_posixsubprocess", "_signal", "_socket", "_ssl",
        "asyncio", "concurrent", "ctypes", "fcntl", "mmap", "multiprocessing", "pty",
        "resource", "shutil", "signal", "socket", "ssl", "subprocess", "termios", "tty",
    }
)  # fmt: skip
"""Denied modules also replaced by None in ``sys.modules`` (so even ``importlib`` fails).
Modules the interpreter itself imports (``_io``, ``posix``, ``_thread``) must stay."""

PRELOADED_MODULES = (
    "abc", "array", "bisect", "collections", "copy", "dataclasses", "datetime", "decimal",
    "enum", "fractions", "functools", "heapq", "itertools", "json", "math", "numbers",
    "operator", "random", "re", "statistics", "string", "typing", "cmath", "struct",
)  # fmt: skip
"""Imported before the guard so that their own imports of denied modules cannot fail later."""

OPTIONAL_PRELOADED_MODULES = ("numpy",)
"""Preloaded when installed (programs may use them; they pull in ctypes, hence also seccomp)."""

_OS_BLOCKED = (
    "system", "popen", "fork", "forkpty", "kill", "killpg", "execl", "execle", "execlp",
    "execlpe", "execv", "execve", "execvp", "execvpe", "spawnl", "spawnle", "spawnlp",
    "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp",
    "putenv", "unsetenv", "remove", "unlink", "rmdir", "removedirs", "rename", "renames",
    "replace", "truncate", "ftruncate", "chmod", "fchmod", "lchmod", "chown", "fchown",
    "lchown", "chroot", "chdir", "fchdir", "link", "symlink", "mkfifo", "mknod", "setsid",
    "setpgid", "setpgrp", "setuid", "setgid", "seteuid", "setegid", "setreuid", "setregid",
    "setresuid", "setresgid", "setgroups", "nice", "setpriority", "sched_setaffinity",
    "pidfd_open", "register_at_fork", "read", "readv", "pread", "preadv", "write", "writev",
    "pwrite", "pwritev", "sendfile", "dup", "dup2", "close", "closerange", "openpty",
    "pipe", "pipe2", "fdopen", "setxattr", "removexattr", "memfd_create", "wait", "waitpid",
)  # fmt: skip
_SHUTIL_BLOCKED = (
    "rmtree", "move", "chown", "copy", "copy2", "copyfile", "copytree", "copymode",
    "copystat", "make_archive", "unpack_archive", "disk_usage", "which",
)  # fmt: skip
_SUBPROCESS_BLOCKED = (
    "Popen",
    "run",
    "call",
    "check_call",
    "check_output",
    "getoutput",
    "getstatusoutput",
)
_SOCKET_BLOCKED = (
    "socket", "create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo",
    "gethostbyname", "gethostbyname_ex", "gethostbyaddr",
)  # fmt: skip

_OPEN_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def apply_limits(
    *, cpu_s: int, memory_mb: int, file_size_mb: int, nproc: int | None, stack_mb: int
) -> None:
    """OS limits that hold whatever the program does; never raises a hard limit we lack."""

    def cap(which: int, soft: int, hard: int | None = None) -> None:
        _, current_hard = resource.getrlimit(which)
        want_hard = soft if hard is None else hard
        if current_hard != resource.RLIM_INFINITY:
            want_hard = min(want_hard, current_hard)
            soft = min(soft, want_hard)
        resource.setrlimit(which, (soft, want_hard))

    mib = 1024 * 1024
    # SIGXCPU at the soft limit, SIGKILL a little later if the program ignores it.
    cap(resource.RLIMIT_CPU, cpu_s, cpu_s + 2)
    cap(resource.RLIMIT_AS, memory_mb * mib)
    cap(resource.RLIMIT_FSIZE, file_size_mb * mib)
    cap(resource.RLIMIT_CORE, 0)
    if nproc is not None:
        cap(resource.RLIMIT_NPROC, nproc)
    # A larger main-thread stack turns deep C recursion into RecursionError rather than a
    # segfault more often; the soft limit is read when the stack grows, not only at exec.
    _, stack_hard = resource.getrlimit(resource.RLIMIT_STACK)
    if stack_hard == resource.RLIM_INFINITY or stack_hard >= stack_mb * mib:
        soft_stack, _ = resource.getrlimit(resource.RLIMIT_STACK)
        if soft_stack != resource.RLIM_INFINITY and soft_stack < stack_mb * mib:
            resource.setrlimit(resource.RLIMIT_STACK, (stack_mb * mib, stack_hard))


def preload(names: Iterable[str], optional: Iterable[str] = ()) -> None:
    """Import ``names`` (and ``optional`` ones when installed) before the guard."""
    for name in names:
        __import__(name)
    for name in optional:
        with contextlib.suppress(ImportError):
            __import__(name)


def _patch(target: object, name: str, value: object) -> None:
    """Replace an attribute (untyped on purpose: the replacements have other signatures)."""
    setattr(target, name, value)


def _blocked(name: str) -> Callable[..., NoReturn]:
    def blocked(*args: Any, **kwargs: Any) -> NoReturn:
        raise PermissionError(errno.EPERM, f"{name} is disabled in the sandbox")

    blocked.__name__ = blocked.__qualname__ = name.rpartition(".")[2]
    return blocked


class _PathPolicy:
    """Reads inside the work directory or the import path; writes only in the work directory."""

    def __init__(self, workdir: str, read_roots: Sequence[str]) -> None:
        self._realpath = os.path.realpath
        self._join = os.path.join
        self._fspath = os.fspath
        self._fsdecode = os.fsdecode
        self.workdir = self._realpath(workdir)
        roots = [self._realpath(r) for r in read_roots if r]
        self._read_roots = tuple(r for r in roots if r != os.sep)

    @staticmethod
    def _under(path: str, root: str) -> bool:
        return path == root or path.startswith(root.rstrip(os.sep) + os.sep)

    def check(self, path: Any, *, write: bool, what: str) -> None:
        if isinstance(path, int):
            raise PermissionError(errno.EACCES, f"{what} on a file descriptor is not allowed")
        raw = self._fspath(path)
        text = self._fsdecode(raw) if isinstance(raw, bytes) else raw
        real = self._realpath(self._join(self.workdir, text))
        if self._under(real, self.workdir):
            return
        if not write and any(self._under(real, root) for root in self._read_roots):
            return
        kind = "writing" if write else "reading"
        raise PermissionError(
            errno.EACCES, f"{kind} outside the sandbox's work directory is not allowed", text
        )


def _open_mode_writes(mode: str) -> bool:
    return any(c in mode for c in "wax+")


def apply_guard(*, workdir: str, read_roots: Sequence[str]) -> None:
    """Disable what programs must not use; call once, right before loading the program."""
    policy = _PathPolicy(workdir, read_roots)
    original_open = builtins.open
    original_os_open = os.open
    original_listdir = os.listdir
    original_scandir = os.scandir
    original_mkdir = os.mkdir
    original_import = builtins.__import__
    original_fileio = io.FileIO

    def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        policy.check(file, write=_open_mode_writes(str(mode)), what="open")
        return original_open(file, mode, *args, **kwargs)

    def guarded_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if kwargs.get("dir_fd") is not None:
            raise PermissionError(errno.EACCES, "os.open with dir_fd is not allowed")
        policy.check(path, write=bool(flags & _OPEN_WRITE_FLAGS), what="os.open")
        return original_os_open(path, flags, *args, **kwargs)

    def guarded_listdir(path: Any = ".") -> list[Any]:
        policy.check(path, write=False, what="listdir")
        return original_listdir(path)

    def guarded_scandir(path: Any = ".") -> Any:
        policy.check(path, write=False, what="scandir")
        return original_scandir(path)

    def guarded_mkdir(path: Any, mode: int = 0o777, **kwargs: Any) -> None:
        if kwargs.get("dir_fd") is not None:
            raise PermissionError(errno.EACCES, "os.mkdir with dir_fd is not allowed")
        policy.check(path, write=True, what="mkdir")
        original_mkdir(path, mode)

    class GuardedFileIO(original_fileio):  # type: ignore[misc,valid-type]
        def __init__(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> None:
            policy.check(file, write=_open_mode_writes(mode), what="FileIO")
            super().__init__(file, mode, *args, **kwargs)

    def guarded_import(
        name: str,
        globals_: Mapping[str, object] | None = None,
        locals_: Mapping[str, object] | None = None,
        fromlist: Sequence[str] = (),
        level: int = 0,
    ) -> ModuleType:
        if level == 0 and name.partition(".")[0] in DENIED_MODULES:
            raise ImportError(f"module {name!r} is not available in the sandbox", name=name)
        return original_import(name, globals_, locals_, fromlist, level)

    posix = sys.modules.get("posix")
    for module in (os, posix):
        if module is None:
            continue
        for name in _OS_BLOCKED:
            if hasattr(module, name):
                _patch(module, name, _blocked(f"os.{name}"))
        _patch(module, "open", guarded_os_open)
        _patch(module, "mkdir", guarded_mkdir)
    # Not posix.listdir/scandir: the import system calls those on the real module.
    _patch(os, "listdir", guarded_listdir)
    _patch(os, "scandir", guarded_scandir)
    for module_name, names in (
        ("shutil", _SHUTIL_BLOCKED),
        ("subprocess", _SUBPROCESS_BLOCKED),
        ("socket", _SOCKET_BLOCKED),
        ("_socket", ("socket", "socketpair", "getaddrinfo", "gethostbyname")),
        ("_posixsubprocess", ("fork_exec",)),
    ):
        loaded = sys.modules.get(module_name)
        if loaded is not None:
            for name in names:
                if hasattr(loaded, name):
                    _patch(loaded, name, _blocked(f"{module_name}.{name}"))
    for name in HIDDEN_MODULES:
        sys.modules[name] = None  # type: ignore[assignment]
    _patch(builtins, "open", guarded_open)
    _patch(io, "open", guarded_open)
    _patch(io, "FileIO", GuardedFileIO)
    _patch(builtins, "__import__", guarded_import)
    _patch(builtins, "breakpoint", _blocked("breakpoint"))
    for name in ("exit", "quit", "help", "copyright", "credits", "license"):
        if hasattr(builtins, name):
            delattr(builtins, name)
