"""Run an untrusted program over many inputs in a contained, reusable worker process.

One worker loads the program once and calls it on a stream of inputs (start-up is amortized);
results stream back over a dedicated pipe while the parent enforces the per-call and total wall
clocks, kills the worker's process group on a hard timeout, crash or protocol violation, and
respawns a fresh worker for the remaining inputs.

Everything the worker sends is untrusted: the program shares its process and can monkeypatch
the harness or write to its pipes. The parent therefore bounds every frame, requires results for
exactly the requested indices in order, and treats anything else as an error for that call.
Return values are data for the trusted parent to validate and score, never to execute.

Layers, strongest first: bubblewrap when usable (read-only root; no network; own PID, IPC and UTS
namespaces; empty /tmp, /run, /root and /home; only the work directory writable), a seccomp
filter (no fork/exec, sockets, signals to others, ptrace, mounts, namespaces), rlimits, and the
Python guard. Without bubblewrap, a determined program that gets past the guard can still read
and write whatever the user can (files, and other same-user processes via /proc/PID/mem); the
kernel filter still stops it from spawning processes, opening sockets or signalling.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from enum import Enum
from typing import IO, Any

from amortized.planners.sandbox import _launch, _protocol
from amortized.planners.sandbox._types import (
    CallResult,
    CallStatus,
    ProgramRun,
    SandboxError,
    SandboxLimits,
)

_STARTUP_TIMEOUT_S = 60.0
"""Trusted start-up (interpreter, driver and preloaded imports) before the program loads."""
_MIN_LOAD_TIMEOUT_S = 2.0
_RECURSION_LIMIT = 10_000
_STACK_MB = 256
_INTERNAL_ERROR_EXIT = 70
_READ_CHUNK = 1 << 20
_WRITE_CHUNK = 1 << 16
_DRIVER_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def bubblewrap_available() -> bool:
    """Whether this machine can run workers under bubblewrap (bwrap installed and permitted)."""
    return _launch.bubblewrap_available()


def _hard_timeout(soft_s: float) -> float:
    """When the parent kills a call that ignored the soft SIGALRM timeout."""
    return soft_s * 1.25 + 0.5


def _nproc_limit(headroom: int) -> int | None:
    """RLIMIT_NPROC for a worker: this uid's current task count plus ``headroom``.

    The kernel counts every process and thread of the real uid, so a fixed small number would
    stop the worker of a busy user from even starting; for root it is not enforced at all.
    """
    uid = os.getuid()
    if uid == 0:
        return None
    tasks = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid == uid:
                tasks += len(os.listdir(f"/proc/{entry}/task"))
        except OSError:
            continue
    return tasks + headroom


def describe_exit(code: int, *, bubblewrap: bool, cpu_time_s: int) -> str:
    """Why a worker ended, from its exit status (bwrap reports a signal as 128 + number)."""
    signum = -code if code < 0 else None
    if bubblewrap and 128 < code < 128 + 65:
        signum = code - 128
    if signum is not None:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = "unknown signal"
        if signum == signal.SIGXCPU:
            return f"worker exceeded its CPU time limit ({cpu_time_s} s; signal {signum}, {name})"
        if signum == signal.SIGKILL:
            return f"worker was killed (signal {signum}, {name}: CPU or memory limit?)"
        if signum == signal.SIGXFSZ:
            return f"file size limit exceeded (signal {signum}, {name})"
        if signum == signal.SIGSEGV:
            return f"worker crashed (signal {signum}, {name}: C stack overflow in deep recursion?)"
        if signum == signal.SIGABRT:
            return f"worker crashed (signal {signum}, {name}: out of memory?)"
        return f"worker crashed (signal {signum}, {name})"
    if code == _INTERNAL_ERROR_EXIT:
        return f"worker exited with code {code} (internal failure: out of memory?)"
    return f"worker exited with code {code} (os._exit or a crash in the program?)"


class _Worker:
    """One worker process, in its own session and process group, and our ends of its pipes."""

    def __init__(self, workdir: str, *, bubblewrap: bool) -> None:
        cmd_read, self.cmd_fd = os.pipe()
        self.result_fd, result_write = os.pipe()
        self.stderr: IO[bytes] = tempfile.TemporaryFile(  # noqa: SIM115 - closed in close()
            prefix="amortized-sandbox-stderr-"
        )
        argv = _launch.worker_command(workdir, cmd_read, result_write, bubblewrap=bubblewrap)
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self.stderr,
                pass_fds=(cmd_read, result_write),
                cwd=workdir,
                env=_launch.worker_env(workdir),
                start_new_session=True,
            )
        except OSError as exc:
            self._close_fds()
            raise SandboxError(f"cannot start a sandbox worker: {exc}") from exc
        finally:
            os.close(cmd_read)
            os.close(result_write)
        os.set_blocking(self.cmd_fd, False)
        os.set_blocking(self.result_fd, False)
        self._returncode: int | None = None

    def close_cmd(self) -> None:
        """Close the command pipe: the worker sees EOF after the inputs it has."""
        if self.cmd_fd >= 0:
            os.close(self.cmd_fd)
            self.cmd_fd = -1

    def _close_fds(self) -> None:
        self.close_cmd()
        if self.result_fd >= 0:
            os.close(self.result_fd)
            self.result_fd = -1
        self.stderr.close()

    def _exited(self) -> bool:
        """Exited yet? Leaves it unreaped, so its process group id cannot be reused."""
        try:
            info = os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except ChildProcessError:
            return True
        return info is not None

    def stop(self, wait_s: float = 0.0) -> int:
        """Give it ``wait_s`` to exit, then kill its whole process group; the exit status."""
        if self._returncode is not None:
            return self._returncode
        end = time.monotonic() + wait_s
        while not self._exited() and time.monotonic() < end:
            time.sleep(0.002)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._returncode = self.process.wait()
        return self._returncode

    def stderr_tail(self, limit: int = 2000) -> str:
        """What the worker wrote to stderr before it redirected it (start-up problems)."""
        try:
            self.stderr.seek(0, os.SEEK_END)
            size = self.stderr.tell()
            self.stderr.seek(max(0, size - limit))
            return self.stderr.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""

    def close(self) -> None:
        self.stop()
        self._close_fds()


class _Phase(Enum):
    STARTUP = "startup"
    LOAD = "load"
    CALLS = "calls"


class _Run:
    """The state of one :meth:`Sandbox.run`: results so far, restarts, deadlines."""

    def __init__(
        self,
        limits: SandboxLimits,
        bubblewrap: bool,
        config: dict[str, Any],
        frames: list[bytes],
        workdir: str,
        progress: bool,
    ) -> None:
        self.limits = limits
        self.bubblewrap = bubblewrap
        self.config_frame = _protocol.encode(config)
        self.frames = frames
        self.workdir = workdir
        self.results: list[CallResult | None] = [None] * len(frames)
        self.next_index = 0
        self.restarts = 0
        self.worker_starts = 0
        self.loaded_once = False
        self.load_error: str | None = None
        self.seccomp = False
        self.started = time.monotonic()
        self.deadline = self.started + limits.total_timeout_s
        self.load_timeout = float(config["limits"]["load_timeout_s"])
        slack = 6 * (limits.output_chars + limits.traceback_chars) + 65536
        self.max_frame = _protocol.MAX_VALUE_BYTES + slack
        self._bar: Any = None
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=len(frames), unit="call", desc="sandbox")

    @property
    def done(self) -> bool:
        return self.next_index >= len(self.frames)

    def record(self, result: CallResult) -> None:
        self.results[result.index] = result
        self.next_index = result.index + 1
        if self._bar is not None:
            self._bar.update(1)

    def fill_rest(self, status: CallStatus, error: str) -> None:
        for index in range(self.next_index, len(self.frames)):
            self.record(CallResult(index, status, None, error, "", 0.0))

    def failed(self, blame: CallResult | None) -> None:
        """A worker had to be killed or died: blame the call in flight, maybe give up."""
        if blame is not None:
            self.record(blame)
        self.restarts += 1
        if not self.done and self.restarts > self.limits.max_restarts:
            self.fill_rest(
                CallStatus.ERROR,
                f"not run: too many worker restarts ({self.limits.max_restarts})",
            )

    def execute(self) -> None:
        try:
            first = True
            while first or not self.done:
                first = False
                if time.monotonic() >= self.deadline:
                    self.fill_rest(CallStatus.ERROR, self.total_timeout_message())
                    break
                _Session(self).run()
        finally:
            if self._bar is not None:
                self._bar.close()

    def total_timeout_message(self) -> str:
        limit = self.limits.total_timeout_s
        return f"not run: the run's total time limit ({limit:g} s) was reached"


class _Session:
    """One worker's life: start-up, program load, then calls until done or something breaks."""

    def __init__(self, run: _Run) -> None:
        self.run_state = run
        self.limits = run.limits
        self.phase = _Phase.STARTUP
        self.calls = 0
        self.reader = _protocol.FrameReader(run.max_frame)
        self.pending = memoryview(b"".join([run.config_frame, *run.frames[run.next_index :]]))
        self.worker = _Worker(run.workdir, bubblewrap=run.bubblewrap)
        run.worker_starts += 1
        self.deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        self.call_started = time.monotonic()

    def run(self) -> None:
        worker = self.worker
        try:
            poller = select.poll()
            poller.register(worker.result_fd, select.POLLIN)
            poller.register(worker.cmd_fd, select.POLLOUT)
            while True:
                limit = min(self.deadline, self.run_state.deadline)
                wait_ms = max(0, math.ceil((limit - time.monotonic()) * 1000))
                for fd, event in poller.poll(wait_ms):
                    if fd == worker.cmd_fd:
                        if not self._write(event):
                            poller.unregister(fd)
                            worker.close_cmd()
                    elif fd == worker.result_fd and self._read():
                        return
                # Only after reading: results that arrived while we were descheduled count.
                if time.monotonic() >= min(self.deadline, self.run_state.deadline):
                    self._on_deadline(total=self.run_state.deadline <= self.deadline)
                    return
        finally:
            worker.close()

    def _write(self, event: int) -> bool:
        """Send what the pipe takes; False once everything is sent or the worker is gone."""
        if event & (select.POLLERR | select.POLLHUP):
            return False
        try:
            written = os.write(self.worker.cmd_fd, self.pending[:_WRITE_CHUNK])
        except BlockingIOError:
            return True
        except OSError:
            return False
        self.pending = self.pending[written:]
        return len(self.pending) > 0

    def _read(self) -> bool:
        """Handle what arrived; True when this session is over."""
        try:
            data = os.read(self.worker.result_fd, _READ_CHUNK)
        except BlockingIOError:
            return False
        if not data:
            self._on_exit()
            return True
        payloads, broken = self.reader.feed(data)
        for payload in payloads:
            try:
                if self._on_message(_protocol.decode(payload)):
                    return True
            except _protocol.ProtocolError as exc:
                self._on_violation(str(exc))
                return True
        if broken is not None:
            self._on_violation(broken)
            return True
        return False

    # -- events -------------------------------------------------------------------------

    def _on_message(self, message: dict[str, Any]) -> bool:
        """Advance the protocol; True when the session is over."""
        run = self.run_state
        kind = message.get("t")
        now = time.monotonic()
        if self.phase is _Phase.STARTUP:
            if kind == "fatal":
                raise SandboxError(f"sandbox worker failed to start:\n{message.get('e')}")
            if kind != "started":
                raise _protocol.ProtocolError(f"unexpected {kind!r} message during start-up")
            run.seccomp = message.get("seccomp") is True
            self.phase = _Phase.LOAD
            self.deadline = now + _hard_timeout(run.load_timeout)
            return False
        if self.phase is _Phase.LOAD:
            if kind == "load_error" and isinstance(message.get("e"), str):
                self._on_load_error(_clip(message["e"], self.limits.traceback_chars + 200))
                return True
            if kind != "ready":
                raise _protocol.ProtocolError(f"unexpected {kind!r} message during load")
            run.loaded_once = True
            self.phase = _Phase.CALLS
            self.deadline = now + _hard_timeout(self.limits.call_timeout_s)
            self.call_started = now
            return run.done
        if kind == "recycle" and message.get("i") == run.next_index and self.calls > 0:
            self.worker.stop(wait_s=1.0)
            return True
        run.record(self._result(message))
        self.calls += 1
        self.deadline = now + _hard_timeout(self.limits.call_timeout_s)
        self.call_started = now
        return run.done

    def _result(self, message: dict[str, Any]) -> CallResult:
        """A validated result for the expected index, or :class:`ProtocolError`."""
        expected = self.run_state.next_index
        keys = set(message)
        allowed = {"t", "i", "s", "e", "o", "d", "v"}
        if message.get("t") != "result" or not keys <= allowed:
            raise _protocol.ProtocolError(f"unexpected message {sorted(keys)!r}")
        index = message.get("i")
        if type(index) is not int or index != expected:
            raise _protocol.ProtocolError(f"result for index {index!r}, expected {expected}")
        raw_status = message.get("s")
        if raw_status not in {s.value for s in CallStatus}:
            raise _protocol.ProtocolError("result with an unknown status")
        status = CallStatus(raw_status)
        error, output, duration = message.get("e"), message.get("o"), message.get("d")
        ok = status is CallStatus.OK
        if ok != ("v" in message) or ok != (error is None):
            raise _protocol.ProtocolError("result value/error do not match its status")
        if not isinstance(output, str) or not (error is None or isinstance(error, str)):
            raise _protocol.ProtocolError("result output or error is not a string")
        if not isinstance(duration, int | float) or not 0 <= duration < math.inf:
            raise _protocol.ProtocolError("result duration is not a number")
        limits = self.limits
        return CallResult(
            index=index,
            status=status,
            value=message.get("v"),
            error=None if error is None else _clip(error, limits.traceback_chars + 200),
            output=_clip(output, limits.output_chars + 100),
            duration_s=min(float(duration), _hard_timeout(limits.call_timeout_s)),
        )

    def _on_load_error(self, error: str) -> None:
        run = self.run_state
        if not run.loaded_once:
            run.load_error = error
            run.fill_rest(CallStatus.ERROR, error)
        else:
            run.fill_rest(CallStatus.ERROR, f"worker restart failed: {error}")

    def _startup_failure(self, reason: str) -> None:
        run = self.run_state
        if not run.loaded_once:
            tail = self.worker.stderr_tail()
            raise SandboxError(f"sandbox worker failed to start: {reason}\n{tail}".strip())
        run.failed(None)

    def _blame(self, status: CallStatus, error: str) -> CallResult:
        elapsed = time.monotonic() - self.call_started
        return CallResult(self.run_state.next_index, status, None, error, "", elapsed)

    def _on_deadline(self, *, total: bool) -> None:
        run = self.run_state
        self.worker.stop()
        if total:
            if self.phase is _Phase.CALLS and not run.done:
                limit = self.limits.total_timeout_s
                run.record(
                    self._blame(
                        CallStatus.TIMEOUT, f"the run's total time limit ({limit:g} s) was reached"
                    )
                )
            if not run.loaded_once:
                run.load_error = "the run's total time limit was reached before the program loaded"
                run.fill_rest(CallStatus.ERROR, run.load_error)
            run.fill_rest(CallStatus.ERROR, run.total_timeout_message())
        elif self.phase is _Phase.STARTUP:
            self._startup_failure(f"no response within {_STARTUP_TIMEOUT_S:g} s")
        elif self.phase is _Phase.LOAD:
            self._on_load_error(f"program load timed out (over {run.load_timeout:g} s)")
        else:
            limit = self.limits.call_timeout_s
            message = f"call exceeded the {limit:g} s time limit (worker killed)"
            run.failed(self._blame(CallStatus.TIMEOUT, message))

    def _on_exit(self) -> None:
        run = self.run_state
        code = self.worker.stop(wait_s=2.0)
        reason = describe_exit(code, bubblewrap=run.bubblewrap, cpu_time_s=self.limits.cpu_time_s)
        if self.phase is _Phase.STARTUP:
            self._startup_failure(reason)
        elif self.phase is _Phase.LOAD:
            self._on_load_error(f"program failed to load: {reason}")
        elif not run.done:
            run.failed(self._blame(CallStatus.ERROR, reason))

    def _on_violation(self, reason: str) -> None:
        run = self.run_state
        self.worker.stop()
        message = f"malformed message from the worker ({reason}): the program tampered with it?"
        if self.phase is _Phase.STARTUP:
            self._startup_failure(message)
        elif self.phase is _Phase.LOAD:
            self._on_load_error(f"program failed to load: {message}")
        elif not run.done:
            run.failed(self._blame(CallStatus.ERROR, message))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "[... cut]"


class Sandbox:
    """Runs programs over inputs in contained workers; reusable, one worker per run at a time.

    Containment: a separate process group with rlimits (CPU, address space, file size,
    processes, no core dumps), a private work directory as cwd and HOME, a minimal environment,
    a seccomp filter (no processes, sockets or signals to others), a Python guard (no dangerous
    modules or functions, file access confined to the work directory) and, where available,
    bubblewrap (read-only root, no network, PID namespace, hidden /tmp, /run and home).
    """

    def __init__(
        self, limits: SandboxLimits | None = None, *, use_bubblewrap: bool | None = None
    ) -> None:
        self.limits = limits or SandboxLimits()
        if use_bubblewrap is None:
            use_bubblewrap = bubblewrap_available()
        elif use_bubblewrap and not bubblewrap_available():
            raise SandboxError("bubblewrap was requested but bwrap is missing or not permitted")
        self.use_bubblewrap = use_bubblewrap

    def run(
        self,
        source: str,
        inputs: Sequence[Any],
        *,
        entrypoint: str = "solve",
        driver: str | None = None,
        progress: bool = False,
    ) -> ProgramRun:
        """Call ``entrypoint`` (or ``driver(entrypoint_function, input)``) on every input.

        ``driver`` is a trusted ``module:function``, imported in the worker before the guard.
        Inputs must be JSON-serializable; results come back in input order.
        """
        if not isinstance(source, str):
            raise SandboxError("source must be a string")
        if not entrypoint.isidentifier():
            raise SandboxError(f"entrypoint {entrypoint!r} is not a Python identifier")
        if driver is not None and not _DRIVER_PATTERN.match(driver):
            raise SandboxError(f"driver {driver!r} is not of the form 'module:function'")
        frames = []
        for index, value in enumerate(inputs):
            try:
                encoded = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
            except (TypeError, ValueError) as exc:
                raise SandboxError(f"input {index} is not JSON-serializable: {exc}") from exc
            frames.append(_protocol.input_frame(index, encoded))
        limits = self.limits
        workdir = os.path.realpath(tempfile.mkdtemp(prefix="amortized-sandbox-"))
        config = {
            "source": source,
            "entrypoint": entrypoint,
            "driver": driver,
            "workdir": workdir,
            "limits": {
                "call_timeout_s": limits.call_timeout_s,
                "load_timeout_s": max(limits.call_timeout_s, _MIN_LOAD_TIMEOUT_S),
                "cpu_time_s": limits.cpu_time_s,
                "recycle_cpu_s": max(
                    limits.cpu_time_s - _hard_timeout(limits.call_timeout_s) - 1.0,
                    limits.cpu_time_s / 2,
                ),
                "memory_mb": limits.memory_mb,
                "file_size_mb": limits.file_size_mb,
                "nproc": _nproc_limit(limits.max_processes),
                "output_chars": limits.output_chars,
                "traceback_chars": limits.traceback_chars,
                "max_value_bytes": _protocol.MAX_VALUE_BYTES,
                "recursion_limit": _RECURSION_LIMIT,
                "stack_mb": _STACK_MB,
            },
        }
        state = _Run(limits, self.use_bubblewrap, config, frames, workdir, progress)
        try:
            state.execute()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        results = [r for r in state.results if r is not None]
        if len(results) != len(frames):  # pragma: no cover - every path fills all results
            raise SandboxError("internal error: results missing")
        layers = ["bwrap"] if self.use_bubblewrap else []
        layers += ["seccomp"] if state.seccomp else []
        return ProgramRun(
            results=results,
            load_error=state.load_error,
            worker_starts=state.worker_starts,
            wall_s=time.monotonic() - state.started,
            sandboxed_by="+".join([*layers, "rlimits"]),
        )
