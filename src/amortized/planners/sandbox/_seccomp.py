"""The worker's seccomp-BPF filter: an allowlist of what a pure-Python policy needs.

Installed in the worker after its imports and before the program loads, the same in both
modes. Unlike the Python guard, the kernel enforces it, so it holds when a program gets past the
guard (``object.__subclasses__()``, a re-imported ``posix``, ctypes reached through numpy).
Files may only be opened for reading: nothing can be created, changed or removed
anywhere, in either mode. Everything else not listed is refused with EPERM: processes and
threads, sockets, signals (the
worker may only signal itself), scheduling, priorities and limits (``prlimit64`` may only read
the worker's own), ptrace, mounts, namespaces, keys, file modes, links, locks and every
host-wide knob. ``ioctl`` and ``fcntl`` are limited to the few requests Python's own file
objects make (no ``F_SETOWN``/``F_SETSIG``, which could signal another process, and no file
locks). A system call from another ABI (int 0x80 on x86-64) kills the worker; x32 calls are
refused. Only x86-64 and AArch64 are supported; elsewhere the worker says it runs without it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import signal
import struct
from typing import Any

_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JGE_K = 0x35
_BPF_JSET_K = 0x45
_BPF_RET_K = 0x06

_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2

_X32_SYSCALL_BIT = 0x40000000

_OFFSET_NR = 0
_OFFSET_ARCH = 4


def _arg_low(index: int) -> int:
    """Offset of the low 32 bits of syscall argument ``index`` (little-endian)."""
    return 16 + 8 * index


def _arg_high(index: int) -> int:
    return _arg_low(index) + 4


ALLOWED = (
    # files: read what is visible, write only to descriptors already open (open and
    # openat are checked below: read-only)
    "read", "write", "readv", "writev", "pread64", "pwrite64", "lseek", "close",
    "close_range", "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs",
    "access", "faccessat", "faccessat2", "getdents", "getdents64", "getcwd", "chdir",
    "fchdir", "readlink", "readlinkat", "fadvise64", "umask", "dup", "dup2", "dup3",
    "poll", "ppoll", "select", "pselect6",
    # memory
    "mmap", "munmap", "mprotect", "mremap", "brk", "madvise", "mincore", "msync",
    # signals to itself, timers, clocks
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "restart_syscall",
    "getitimer", "setitimer", "alarm", "pause", "nanosleep", "clock_nanosleep",
    "clock_gettime", "clock_getres", "gettimeofday", "time", "times", "getrusage",
    # identity and system facts (read only)
    "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getresuid",
    "getresgid", "getgroups", "getpgrp", "getpgid", "getsid", "uname", "sysinfo",
    "getrlimit", "sched_getaffinity", "sched_yield", "getcpu", "getrandom",
    # the C library's own bookkeeping
    "futex", "set_robust_list", "set_tid_address", "rseq", "exit", "exit_group",
)  # fmt: skip
"""Allowed whatever their arguments."""

IOCTL_REQUESTS = (0x5401, 0x5450, 0x5451)
"""TCGETS (``isatty``), FIONCLEX and FIOCLEX (``os.set_inheritable``)."""
FCNTL_COMMANDS = (0, 1, 2, 3, 4, 1030)
"""F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC."""
OPEN_WRITE_FLAGS = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000
"""O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND: an open with any of them is refused, so a
program can neither create nor change a file anywhere (the disk limit is zero)."""

_X86_64: dict[str, int] = {
    "read": 0, "write": 1, "open": 2, "close": 3, "stat": 4, "fstat": 5, "lstat": 6,
    "poll": 7, "lseek": 8, "mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12,
    "rt_sigaction": 13, "rt_sigprocmask": 14, "rt_sigreturn": 15, "ioctl": 16,
    "pread64": 17, "pwrite64": 18, "readv": 19, "writev": 20, "access": 21, "select": 23,
    "sched_yield": 24, "mremap": 25, "msync": 26, "mincore": 27, "madvise": 28, "dup": 32,
    "dup2": 33, "pause": 34, "nanosleep": 35, "getitimer": 36, "alarm": 37, "setitimer": 38,
    "getpid": 39, "clone": 56, "exit": 60, "uname": 63, "fcntl": 72, "fsync": 74,
    "fdatasync": 75, "truncate": 76, "ftruncate": 77, "getdents": 78, "getcwd": 79,
    "chdir": 80, "fchdir": 81, "rename": 82, "mkdir": 83, "rmdir": 84, "creat": 85,
    "unlink": 87, "readlink": 89, "umask": 95, "gettimeofday": 96, "getrlimit": 97,
    "getrusage": 98, "sysinfo": 99, "times": 100, "getuid": 102, "getgid": 104,
    "geteuid": 107, "getegid": 108, "getppid": 110, "getpgrp": 111, "getgroups": 115,
    "getresuid": 118, "getresgid": 120, "getpgid": 121, "getsid": 124, "sigaltstack": 131,
    "statfs": 137, "fstatfs": 138, "gettid": 186, "time": 201, "futex": 202,
    "sched_getaffinity": 204, "getdents64": 217, "set_tid_address": 218,
    "restart_syscall": 219, "fadvise64": 221, "clock_gettime": 228, "clock_getres": 229,
    "clock_nanosleep": 230, "exit_group": 231, "tgkill": 234, "openat": 257, "mkdirat": 258,
    "newfstatat": 262, "unlinkat": 263, "renameat": 264, "readlinkat": 267,
    "faccessat": 269, "pselect6": 270, "ppoll": 271, "set_robust_list": 273,
    "utimensat": 280, "dup3": 292, "prlimit64": 302, "getcpu": 309, "renameat2": 316,
    "getrandom": 318, "statx": 332, "rseq": 334, "clone3": 435, "close_range": 436,
    "faccessat2": 439,
}  # fmt: skip
_AARCH64: dict[str, int] = {
    "getcwd": 17, "dup": 23, "dup3": 24, "fcntl": 25, "ioctl": 29, "mkdirat": 34,
    "unlinkat": 35, "renameat": 38, "statfs": 43, "fstatfs": 44, "truncate": 45,
    "ftruncate": 46, "faccessat": 48, "chdir": 49, "fchdir": 50, "openat": 56, "close": 57,
    "getdents64": 61, "lseek": 62, "read": 63, "write": 64, "readv": 65, "writev": 66,
    "pread64": 67, "pwrite64": 68, "pselect6": 72, "ppoll": 73, "readlinkat": 78,
    "newfstatat": 79, "fstat": 80, "fsync": 82, "fdatasync": 83, "utimensat": 88,
    "exit": 93, "exit_group": 94, "set_tid_address": 96, "futex": 98,
    "set_robust_list": 99, "nanosleep": 101, "getitimer": 102, "setitimer": 103,
    "clock_gettime": 113, "clock_getres": 114, "clock_nanosleep": 115,
    "sched_getaffinity": 123, "sched_yield": 124, "restart_syscall": 128, "tgkill": 131,
    "sigaltstack": 132, "rt_sigaction": 134, "rt_sigprocmask": 135, "rt_sigreturn": 139,
    "getresuid": 148, "getresgid": 150, "times": 153, "getpgid": 155, "getsid": 156,
    "getgroups": 158, "uname": 160, "getrlimit": 163, "getrusage": 165, "umask": 166,
    "getcpu": 168, "gettimeofday": 169, "getpid": 172, "getppid": 173, "getuid": 174,
    "geteuid": 175, "getgid": 176, "getegid": 177, "gettid": 178, "sysinfo": 179,
    "brk": 214, "munmap": 215, "mremap": 216, "clone": 220, "mmap": 222, "fadvise64": 223,
    "mprotect": 226, "msync": 227, "mincore": 232, "madvise": 233, "prlimit64": 261,
    "renameat2": 276, "getrandom": 278, "statx": 291, "rseq": 293, "clone3": 435,
    "close_range": 436, "faccessat2": 439,
}  # fmt: skip
"""Numbers from libseccomp's ``scmp_sys_resolver``; AArch64 lacks the legacy calls."""

# (audit arch, numbers, has x32 ABI)
_ARCHES: dict[str, tuple[int, dict[str, int], bool]] = {
    "x86_64": (0xC000003E, _X86_64, True),
    "aarch64": (0xC00000B7, _AARCH64, False),
}


def _insn(code: int, k: int) -> tuple[int, int, int, int]:
    return (code, 0, 0, k)


def allowed_numbers(machine: str) -> dict[str, int]:
    """The unconditionally allowed syscalls that exist on ``machine``, by name."""
    _, numbers, _ = _ARCHES[machine]
    return {name: numbers[name] for name in ALLOWED if name in numbers}


def build_filter(machine: str, pid: int) -> bytes | None:
    """The BPF program for ``machine`` (``platform.machine()``), or None if unsupported.

    ``pid`` is the worker's own process id: ``tgkill`` is allowed only towards it (``abort``
    and ``raise`` need it), so the worker cannot signal any other process.
    """
    arch = _ARCHES.get(machine)
    if arch is None:
        return None
    audit_arch, numbers, has_x32 = arch
    program: list[tuple[int, int, int, int]] = []
    labels: dict[str, int] = {}
    fixups: list[tuple[int, str, str]] = []  # (index, jt label, jf label); "" = next

    def emit(code: int, k: int, jt: str = "", jf: str = "") -> None:
        if jt or jf:
            fixups.append((len(program), jt, jf))
        program.append(_insn(code, k))

    def jump_if(k: int, target: str) -> None:
        emit(_BPF_JEQ_K, k, jt=target)

    def arg_in(load_offset: int, values: tuple[int, ...]) -> None:
        emit(_BPF_LD_W_ABS, load_offset)
        for value in values:
            jump_if(value, "allow_checked")
        emit(_BPF_RET_K, _RET_ERRNO | errno.EPERM)

    emit(_BPF_LD_W_ABS, _OFFSET_ARCH)
    emit(_BPF_JEQ_K, audit_arch, jf="kill")
    emit(_BPF_LD_W_ABS, _OFFSET_NR)
    if has_x32:
        emit(_BPF_JGE_K, _X32_SYSCALL_BIT, jt="eperm")
    for number in sorted(set(allowed_numbers(machine).values())):
        jump_if(number, "allow")
    if "open" in numbers:
        jump_if(numbers["open"], "open")
    jump_if(numbers["openat"], "openat")
    jump_if(numbers["ioctl"], "ioctl")
    jump_if(numbers["fcntl"], "fcntl")
    jump_if(numbers["prlimit64"], "prlimit64")
    jump_if(numbers["tgkill"], "tgkill")
    jump_if(numbers["clone3"], "enosys")  # so a C library falls back to clone (refused)
    emit(_BPF_RET_K, _RET_ERRNO | errno.EPERM)
    labels["allow"] = len(program)
    emit(_BPF_RET_K, _RET_ALLOW)
    labels["open"] = len(program)
    emit(_BPF_LD_W_ABS, _arg_low(1))
    emit(_BPF_JSET_K, OPEN_WRITE_FLAGS, jt="eperm", jf="allow_checked")
    labels["openat"] = len(program)
    emit(_BPF_LD_W_ABS, _arg_low(2))
    emit(_BPF_JSET_K, OPEN_WRITE_FLAGS, jt="eperm", jf="allow_checked")
    labels["ioctl"] = len(program)
    arg_in(_arg_low(1), IOCTL_REQUESTS)
    labels["fcntl"] = len(program)
    arg_in(_arg_low(1), FCNTL_COMMANDS)
    labels["tgkill"] = len(program)
    arg_in(_arg_low(0), (pid,))
    labels["prlimit64"] = len(program)  # read-only, and only for itself: pid 0, new NULL
    emit(_BPF_LD_W_ABS, _arg_low(0))
    emit(_BPF_JEQ_K, 0, jf="eperm")
    emit(_BPF_LD_W_ABS, _arg_low(2))
    emit(_BPF_JEQ_K, 0, jf="eperm")
    emit(_BPF_LD_W_ABS, _arg_high(2))
    emit(_BPF_JEQ_K, 0, jt="allow_checked", jf="eperm")
    labels["allow_checked"] = len(program)  # BPF jumps only forward
    emit(_BPF_RET_K, _RET_ALLOW)
    labels["eperm"] = len(program)
    emit(_BPF_RET_K, _RET_ERRNO | errno.EPERM)
    labels["enosys"] = len(program)
    emit(_BPF_RET_K, _RET_ERRNO | errno.ENOSYS)
    labels["kill"] = len(program)
    emit(_BPF_RET_K, _RET_KILL_PROCESS)

    for index, jt_label, jf_label in fixups:
        code, _, _, k = program[index]
        jt = labels[jt_label] - index - 1 if jt_label else 0
        jf = labels[jf_label] - index - 1 if jf_label else 0
        if not (0 <= jt <= 255 and 0 <= jf <= 255):
            raise ValueError("seccomp filter jump out of range")
        program[index] = (code, jt, jf, k)
    return b"".join(struct.pack("=HBBI", *insn) for insn in program)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _prctl() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return prctl


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (bwrap does the same for its child), so an
    orphaned worker stuck in a loop does not linger until its CPU limit."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        _prctl()(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def make_dumpable() -> None:
    """Undo the kernel's non-dumpable flag after a uid switch, so the process may use its own
    ``/proc/self/fd`` again. Safe because no other process has the run's uid."""
    with contextlib.suppress(OSError, AttributeError):
        _prctl()(_PR_SET_DUMPABLE, 1, 0, 0, 0)


def install() -> str | None:
    """Install the filter on this (single-threaded) process; None on success, else why not.

    The process may not gain privileges through exec either (the filter refuses exec anyway).
    """
    code = build_filter(platform.machine(), os.getpid())
    if code is None:
        return f"seccomp filter not available on {platform.machine()}"
    try:
        prctl = _prctl()
    except (OSError, AttributeError) as exc:
        return f"cannot call prctl for seccomp: {exc}"
    if prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"prctl(NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}"
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = _SockFprog(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p).value)
    if prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        return f"prctl(SECCOMP) failed: {os.strerror(ctypes.get_errno())}"
    return None
