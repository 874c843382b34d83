"""The worker's command line and environment, with or without bubblewrap.

With bubblewrap the worker's root is built from an allowlist, never the host's ``/``: ``/usr``
and the library links, five entries of ``/etc`` (the dynamic linker's cache and config, the
time zone, the alternatives links), the interpreter's prefixes and the import path of a
``python -I`` (the standard library, site-packages and this package; never the caller's working
directory or script folder), all read-only; a fresh ``/dev`` and ``/proc`` with ``/proc/sys``
and the other kernel interfaces read-only; an empty read-only work directory; then the whole
root is remounted read-only. PID, IPC, UTS, network and cgroup namespaces are private (no
network at all, not even loopback). A root parent keeps only CAP_SETUID/CAP_SETGID for the
worker, which uses them once to become its run's unprivileged uid before the program loads.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence

WORKER_MODULE = "amortized.planners.sandbox._worker"

WORK_DIR_INSIDE = "/sandbox"
"""The worker's (empty, read-only) working directory under bubblewrap."""

_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
              "/etc/alternatives")  # fmt: skip
_READ_ONLY_PROC = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs")
_NEVER_BOUND = ("/", "/root", "/home", "/tmp", "/var", "/var/tmp", "/etc", "/run", "/proc",
                "/sys", "/dev", "/mnt", "/media", "/srv", "/opt")  # fmt: skip
"""Folders never bound whole, even when an import path is one of them."""


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
        # One thread per numeric library: the worker may not start threads at all.
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
    }


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@functools.cache
def isolated_import_path() -> tuple[str, ...]:
    """``sys.path`` of ``python -I`` on this interpreter: what the worker imports from."""
    probe = "import json, sys; print(json.dumps(sys.path))"
    done = subprocess.run(
        [sys.executable, "-I", "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
    )
    return tuple(str(p) for p in json.loads(done.stdout) if p)


def needed_paths() -> list[str]:
    """What the worker reads: the interpreter, its prefixes and its isolated import path."""
    candidates = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(sys.executable),
        os.path.dirname(os.path.realpath(sys.executable)),
        *isolated_import_path(),
    ]
    paths = {os.path.realpath(p) for p in candidates}
    return sorted(p for p in paths if os.path.exists(p) and p not in _NEVER_BOUND)


def _minimal_cover(paths: Iterable[str]) -> list[str]:
    """``paths`` without those already inside another one."""
    kept: list[str] = []
    for path in sorted(set(paths), key=len):
        if not any(_under(path, k) for k in kept):
            kept.append(path)
    return sorted(kept)


def _bind_system(args: list[str]) -> None:
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]


def _ancestors(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def bubblewrap_args(*, as_root: bool, needed: Sequence[str] | None = None) -> list[str]:
    """bwrap options for a worker that can read only what it needs and write nothing."""
    bwrap = shutil.which("bwrap") or "bwrap"
    args = [bwrap]
    _bind_system(args)
    binds = [p for p in _ETC_FILES if os.path.exists(p)]
    binds += needed_paths() if needed is None else list(needed)
    binds = [p for p in _minimal_cover(binds) if not any(_under(p, s) for s in _SYSTEM_DIRS)]
    made: set[str] = set()
    for path in binds:
        for parent in _ancestors(path):
            if parent not in made:  # world-traversable, so the unprivileged uid gets through
                made.add(parent)
                args += ["--perms", "0755", "--dir", parent]
        args += ["--ro-bind", path, path]
    args += ["--dev", "/dev", "--proc", "/proc"]
    for path in _READ_ONLY_PROC:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    args += ["--perms", "0555", "--dir", WORK_DIR_INSIDE, "--chdir", WORK_DIR_INSIDE]
    args += ["--remount-ro", "/"]
    args += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if as_root:
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return [*args, "--"]


def worker_command(cmd_fd: int, result_fd: int, *, bubblewrap: bool) -> list[str]:
    """The full argv that starts one worker."""
    command = python_command(cmd_fd, result_fd)
    if not bubblewrap:
        return command
    return [*bubblewrap_args(as_root=os.geteuid() == 0), *command]


@functools.cache
def bubblewrap_available() -> bool:
    """Whether bwrap exists and can create the namespaces we ask for (cached per process).

    Containers often ship bwrap but forbid namespaces; only a trial run tells.
    """
    if shutil.which("bwrap") is None:
        return False
    try:
        argv = [*bubblewrap_args(as_root=os.geteuid() == 0), sys.executable, "-I", "-S", "-c", ""]
        with tempfile.TemporaryFile() as errors:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                env=worker_env(WORK_DIR_INSIDE),
                timeout=30,
                check=False,
            )
    except (OSError, subprocess.SubprocessError, ValueError):
        return False
    return done.returncode == 0
