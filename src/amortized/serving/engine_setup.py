"""Set-up in every vLLM process (a ``vllm.general_plugins`` entry point, loaded by vLLM in
its API server, engine core and workers when ``VLLM_PLUGINS`` names ``amortized``).

Two fixes for what a client could otherwise trigger: AMX permission before any kernel needs
it, and forced tool calls without free whitespace (:mod:`.tool_call_whitespace`).

Ask Linux for the AMX tile state before any kernel needs it.

On x86-64 Linux a process must request permission for AMX's large register state
(``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``) before its first AMX instruction,
or that instruction raises SIGILL. oneDNN asks when it first builds an AMX kernel, but some
of vLLM's CPU kernels use AMX directly: when a server's first request was a two-token
prompt, the model runner died of SIGILL (exit code -4) and every later request got a 500.
Registered as a ``vllm.general_plugins`` entry point, which vLLM loads in each of its
processes (API server, engine core, workers) when ``VLLM_PLUGINS`` names ``amortized``.
"""

import contextlib
import ctypes
import platform
import sys

_SYS_ARCH_PRCTL = 158
_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18


def has_amx() -> bool:
    """Whether this CPU reports AMX tiles (``amx_tile`` in /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return any(line.startswith("flags") and "amx_tile" in line.split() for line in cpuinfo)
    except OSError:
        return False


def request_amx_permission() -> bool:
    """Request AMX tile state for this process; True if Linux granted it."""
    if not sys.platform.startswith("linux") or platform.machine() != "x86_64" or not has_amx():
        return False
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA)) == 0
    return False


def register() -> None:
    """The ``vllm.general_plugins`` entry point."""
    from amortized.serving import tool_call_whitespace

    request_amx_permission()
    tool_call_whitespace.install()
