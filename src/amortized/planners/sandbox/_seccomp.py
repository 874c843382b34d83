"""A small seccomp-BPF filter for the worker: no new processes, sockets, signals or namespaces,
and none of the host-wide knobs root could otherwise turn (mounts, clock, hostname, modules).

Installed in the worker after its imports and before the program loads. Unlike the Python
guard, the kernel enforces it, so it holds even when a program gets past the guard (e.g. via
``object.__subclasses__()`` or a freshly re-imported ``posix``), and it needs neither root nor
bubblewrap. It cannot restrict paths (that is bubblewrap's job). Only x86-64 and AArch64 are
supported; elsewhere (or where prctl refuses) the worker runs without it and says so.
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
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2

_CLONE_THREAD = 0x00010000
_X32_SYSCALL_BIT = 0x40000000

_OFFSET_NR = 0
_OFFSET_ARCH = 4
_OFFSET_ARG0_LOW = 16  # little-endian low half of args[0]

# Syscalls refused with EPERM, per architecture. Threads stay possible (clone with
# CLONE_THREAD); clone3 answers ENOSYS so libc falls back to clone, whose flags we can see.
_X86_64: dict[str, int] = {
    "socket": 41, "socketpair": 53, "fork": 57, "vfork": 58, "execve": 59, "execveat": 322,
    "kill": 62, "tkill": 200, "ptrace": 101, "process_vm_readv": 310,
    "process_vm_writev": 311, "pidfd_open": 434, "pidfd_send_signal": 424,
    "pidfd_getfd": 438, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "unshare": 272, "setns": 308, "reboot": 169, "init_module": 175, "finit_module": 313,
    "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320, "bpf": 321,
    "perf_event_open": 298, "keyctl": 250, "add_key": 248, "request_key": 249,
    "swapon": 167, "swapoff": 168, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "userfaultfd": 323, "open_by_handle_at": 304,
    "name_to_handle_at": 303, "mknod": 133, "mknodat": 259, "iopl": 172, "ioperm": 173,
    "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159,
    "sethostname": 170, "setdomainname": 171, "acct": 163, "quotactl": 179, "syslog": 103,
    "vhangup": 153, "fanotify_init": 300, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433,
}  # fmt: skip
_AARCH64: dict[str, int] = {
    "socket": 198, "socketpair": 199, "execve": 221, "execveat": 281, "kill": 129,
    "tkill": 130, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
    "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438, "mount": 40,
    "umount2": 39, "pivot_root": 41, "chroot": 51, "unshare": 97, "setns": 268,
    "reboot": 142, "init_module": 105, "finit_module": 273, "delete_module": 106,
    "kexec_load": 104, "kexec_file_load": 294, "bpf": 280, "perf_event_open": 241,
    "keyctl": 219, "add_key": 217, "request_key": 218, "swapon": 224, "swapoff": 225,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "userfaultfd": 282, "open_by_handle_at": 265, "name_to_handle_at": 264, "mknodat": 33,
    "settimeofday": 170, "clock_settime": 112, "clock_adjtime": 266, "adjtimex": 171,
    "sethostname": 161, "setdomainname": 162, "acct": 89, "quotactl": 60, "syslog": 116,
    "vhangup": 58, "fanotify_init": 262, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433,
}  # fmt: skip

# (audit arch, denied table, clone, clone3, tgkill, has x32 ABI)
_ARCHES: dict[str, tuple[int, dict[str, int], int, int, int, bool]] = {
    "x86_64": (0xC000003E, _X86_64, 56, 435, 234, True),
    "aarch64": (0xC00000B7, _AARCH64, 220, 435, 131, False),
}


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> tuple[int, int, int, int]:
    return (code, jt, jf, k)


def build_filter(machine: str, pid: int) -> bytes | None:
    """The BPF program for ``machine`` (``platform.machine()``), or None if unsupported.

    ``pid`` is the worker's own process id: ``tgkill`` is allowed only towards it (``abort``
    and ``raise`` need it), so the worker cannot signal any other process.
    """
    arch = _ARCHES.get(machine)
    if arch is None:
        return None
    audit_arch, denied, clone_nr, clone3_nr, tgkill_nr, has_x32 = arch
    numbers = sorted(set(denied.values()))
    # Layout: header, one JEQ per denied syscall, clone/clone3/tgkill dispatch, ALLOW,
    # then the shared return blocks. Jumps are relative, so resolve them after layout.
    program: list[tuple[int, int, int, int]] = []
    labels: dict[str, int] = {}
    fixups: list[tuple[int, str, str | None]] = []  # (index, jt label, jf label)

    def emit(code: int, k: int, jt: str | None = None, jf: str | None = None) -> None:
        if jt is not None or jf is not None:
            fixups.append((len(program), jt or "", jf))
        program.append(_insn(code, k))

    emit(_BPF_LD_W_ABS, _OFFSET_ARCH)
    emit(_BPF_JEQ_K, audit_arch, jt="", jf="kill")
    emit(_BPF_LD_W_ABS, _OFFSET_NR)
    if has_x32:
        emit(_BPF_JGE_K, _X32_SYSCALL_BIT, jt="eperm", jf="")
    for number in numbers:
        emit(_BPF_JEQ_K, number, jt="eperm", jf="")
    emit(_BPF_JEQ_K, clone3_nr, jt="enosys", jf="")
    emit(_BPF_JEQ_K, clone_nr, jt="clone", jf="")
    emit(_BPF_JEQ_K, tgkill_nr, jt="tgkill", jf="")
    labels["allow"] = len(program)
    emit(_BPF_RET_K, _RET_ALLOW)
    labels["clone"] = len(program)
    emit(_BPF_LD_W_ABS, _OFFSET_ARG0_LOW)
    emit(_BPF_JSET_K, _CLONE_THREAD, jt="allow_checked", jf="eperm")
    labels["tgkill"] = len(program)
    emit(_BPF_LD_W_ABS, _OFFSET_ARG0_LOW)
    emit(_BPF_JEQ_K, pid, jt="allow_checked", jf="eperm")
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


def install() -> str | None:
    """Install the filter on this (single-threaded) process; None on success, else why not."""
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
