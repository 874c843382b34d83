"""The worker's command line and environment, with or without bubblewrap.

With bubblewrap the worker sees a read-only root, fresh /dev, /proc and PID/IPC/UTS/network
namespaces (no network at all, not even loopback), empty tmpfs over /tmp, /run, /root and /home
(so no host sockets or user files), and only its work directory writable. Interpreter and import
paths under a hidden directory are bound back read-only so the worker can still start.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence

WORKER_MODULE = "amortized.planners.sandbox._worker"

_HIDDEN_DIRS = (
    "/tmp", "/var/tmp", "/run", "/root", "/home", "/mnt", "/media", "/srv", "/etc/ssh",
)  # fmt: skip
"""Replaced by empty tmpfs in the sandbox (when they exist and are not symlinks)."""

_HIDDEN_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/sudoers")
"""Replaced by /dev/null: root may read them even without capabilities."""


def python_command(cmd_fd: int, result_fd: int) -> list[str]:
    """The worker's own command: isolated mode (no env vars, user site or cwd on sys.path)."""
    return [sys.executable, "-I", "-B", "-m", WORKER_MODULE, str(cmd_fd), str(result_fd)]


def worker_env(workdir: str) -> dict[str, str]:
    """A minimal environment: nothing from the parent's (API keys stay out)."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        # One thread per numeric library: threads cost address space (RLIMIT_AS) and NPROC.
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
    }


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _needed_paths() -> list[str]:
    """What the worker must read to start: the interpreter, its prefixes and sys.path."""
    candidates: list[str] = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(sys.executable),
        os.path.dirname(os.path.realpath(sys.executable)),
        *(p for p in sys.path if p),
    ]
    paths = {os.path.realpath(p) for p in candidates}
    return sorted(p for p in paths if os.path.exists(p))


def _minimal_cover(paths: Iterable[str]) -> list[str]:
    """``paths`` without those already inside another one."""
    kept: list[str] = []
    for path in sorted(set(paths), key=len):
        if not any(_under(path, k) for k in kept):
            kept.append(path)
    return sorted(kept)


def bubblewrap_args(workdir: str, needed: Sequence[str] | None = None) -> list[str]:
    """bwrap options for a worker whose only writable directory is ``workdir``."""
    bwrap = shutil.which("bwrap") or "bwrap"
    needed = _needed_paths() if needed is None else list(needed)
    hidden: list[str] = []
    for directory in (*_HIDDEN_DIRS, os.path.expanduser("~")):
        real = os.path.realpath(directory)
        if real in hidden or real == "/" or not os.path.isdir(directory):
            continue
        if os.path.islink(directory) or any(_under(real, h) for h in hidden):
            continue
        if any(p == real or _under(real, p) for p in needed):
            continue  # hiding it would hide the interpreter itself
        hidden.append(real)
    args = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for directory in hidden:
        args += ["--tmpfs", directory]
    for path in _HIDDEN_FILES:
        if os.path.isfile(path) and not os.path.islink(path):
            args += ["--ro-bind", os.devnull, path]
    rebind = _minimal_cover(p for p in needed if any(_under(p, h) for h in hidden))
    for path in rebind:
        args += ["--ro-bind", path, path]
    workdir = os.path.realpath(workdir)
    args += ["--bind", workdir, workdir, "--chdir", workdir]
    args += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    return [*args, "--"]


def worker_command(workdir: str, cmd_fd: int, result_fd: int, *, bubblewrap: bool) -> list[str]:
    """The full argv that starts one worker."""
    command = python_command(cmd_fd, result_fd)
    return [*bubblewrap_args(workdir), *command] if bubblewrap else command


@functools.cache
def bubblewrap_available() -> bool:
    """Whether bwrap exists and can create the namespaces we ask for (cached per process).

    Containers often ship bwrap but forbid user namespaces; only a trial run tells.
    """
    if shutil.which("bwrap") is None:
        return False
    with tempfile.TemporaryDirectory(prefix="amortized-bwrap-probe-") as workdir:
        argv = [*bubblewrap_args(workdir), sys.executable, "-I", "-S", "-c", ""]
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=worker_env(workdir),
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
    return done.returncode == 0
