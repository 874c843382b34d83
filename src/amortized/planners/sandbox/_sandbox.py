"""Run an untrusted program over many inputs in a contained, reusable worker process.

One worker loads the program once and calls it on a stream of inputs (start-up is amortized);
results come back over a dedicated pipe while the parent enforces the per-call and total wall
clocks, kills the worker's process group on a hard timeout, crash or protocol violation, and
respawns a fresh worker for the remaining inputs.

Everything the worker sends is untrusted: the program shares its process and can monkeypatch
the harness or write to its pipes. The parent therefore sends one input at a time (a result is
accepted only for the call in flight), bounds every frame, checks every field's exact type and
range, budgets the memory decoded values take, escapes control characters in text, and turns
any failure while handling a message into that call's error. Return values are data for the
trusted parent to validate and score, never to execute.

Layers, strongest first: bubblewrap (an allowlisted read-only root, private namespaces, no
network), a run-specific unprivileged uid when the parent is root, a seccomp allowlist (no
processes or threads, no signals to others, no writing files, no sockets), rlimits, and the
Python guard. Without bubblewrap ("weak" mode, an explicit opt-in) the program can read what
its uid can read; docs/sandbox.md states what each mode guarantees.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import select
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from enum import Enum
from typing import IO, Any

import amortized.planners.sandbox._cleanup as _cleanup
import amortized.planners.sandbox._identity as _identity
import amortized.planners.sandbox._launch as _launch
import amortized.planners.sandbox._protocol as _protocol
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
_MAX_DURATION_S = 1e6
_CANCEL_POLL_MS = 100
_CANCELLED = "not run: the run was cancelled"
_STATUS_VALUES = frozenset(status.value for status in CallStatus)
WEAK_MODE_ENV = "AMORTIZED_SANDBOX_ALLOW_WEAK"
"""Set to 1 to run programs without bubblewrap (weak mode); see docs/sandbox.md."""
_WEAK_REFUSAL = (
    "bubblewrap is not usable here ({why}), and without it the sandbox is weaker (the "
    "program can read what its uid can read). Install it (apt-get install bubblewrap; in a "
    "container, allow user namespaces or run privileged), or accept the weak mode with "
    f"{WEAK_MODE_ENV}=1 or Sandbox(allow_weak=True). See docs/sandbox.md."
)


def bubblewrap_available() -> bool:
    """Whether this machine can run workers under bubblewrap (bwrap installed and permitted)."""
    return _launch.bubblewrap_available()


def _hard_timeout(soft_s: float) -> float:
    """When the parent kills a call that ignored the soft SIGALRM timeout."""
    return soft_s * 1.25 + 0.5


def _nproc_limit(headroom: int, *, own_uid: bool = False) -> int | None:
    """RLIMIT_NPROC for a worker: exactly ``headroom`` when the run has a uid of its own,
    else this uid's current task count plus ``headroom``.

    The kernel counts every process and thread of the real uid, so a fixed small number would
    stop the worker of a busy user from even starting; for root it is not enforced at all.
    """
    if own_uid:
        return max(1, headroom)
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
        argv = _launch.worker_command(cmd_read, result_write, bubblewrap=bubblewrap)
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self.stderr,
                pass_fds=(cmd_read, result_write),
                cwd="/" if bubblewrap else workdir,
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
        cancel: threading.Event | None = None,
    ) -> None:
        self.limits = limits
        self.cancel = cancel
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
        self.worker_uid: int | None = None
        self.value_budget = limits.result_memory_mb * 1024 * 1024
        self.value_used = 0
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
                if self.cancelled:
                    self.fill_rest(CallStatus.ERROR, _CANCELLED)
                    break
                _Session(self).run()
        finally:
            if self._bar is not None:
                self._bar.close()

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def total_timeout_message(self) -> str:
        limit = self.limits.total_timeout_s
        return f"not run: the run's total time limit ({limit:g} s) was reached"


class _Session:
    """One worker's life: start-up, program load, then calls until done or something breaks.

    Inputs go one at a time: the next is written only once the result for the one in flight
    is in, so a result can only ever be claimed for the call that is running.
    """

    def __init__(self, run: _Run) -> None:
        self.run_state = run
        self.limits = run.limits
        self.phase = _Phase.STARTUP
        self.calls = 0
        self.reader = _protocol.FrameReader(run.max_frame)
        first = run.frames[run.next_index] if not run.done else b""
        self.pending = memoryview(run.config_frame + first)
        self.worker = _Worker(run.workdir, bubblewrap=run.bubblewrap)
        self.poller = select.poll()
        self.writing = False
        self.sent_up_to = run.next_index
        """The last input written; one more is written only once this one is answered."""
        run.worker_starts += 1
        self.deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        self.call_started = time.monotonic()

    def run(self) -> None:
        worker = self.worker
        try:
            self.poller.register(worker.result_fd, select.POLLIN)
            self._flush()
            while True:
                if self.run_state.cancelled:
                    worker.stop()
                    self.run_state.fill_rest(CallStatus.ERROR, _CANCELLED)
                    return
                limit = min(self.deadline, self.run_state.deadline)
                wait_ms = max(0, math.ceil((limit - time.monotonic()) * 1000))
                if self.run_state.cancel is not None:
                    wait_ms = min(wait_ms, _CANCEL_POLL_MS)
                for fd, event in self.poller.poll(wait_ms):
                    if fd == worker.cmd_fd:
                        if event & (select.POLLERR | select.POLLHUP):
                            self._stop_writing()
                        else:
                            self._flush()
                    elif fd == worker.result_fd and self._read():
                        return
                # Only after reading: results that arrived while we were descheduled count.
                if time.monotonic() >= min(self.deadline, self.run_state.deadline):
                    self._on_deadline(total=self.run_state.deadline <= self.deadline)
                    return
        finally:
            worker.close()

    def _send_input(self, index: int) -> None:
        frames = self.run_state.frames
        if index < len(frames):
            self.pending = memoryview(frames[index])
            self._flush()

    def _flush(self) -> None:
        """Write what the pipe takes now; wait for POLLOUT only if something is left."""
        while self.pending:
            try:
                written = os.write(self.worker.cmd_fd, self.pending[:_WRITE_CHUNK])
            except BlockingIOError:
                break
            except OSError:  # the worker is gone; its exit is read from the result pipe
                self.pending = memoryview(b"")
                break
            self.pending = self.pending[written:]
        if self.pending and not self.writing:
            self.poller.register(self.worker.cmd_fd, select.POLLOUT)
            self.writing = True
        elif not self.pending:
            self._stop_writing()

    def _stop_writing(self) -> None:
        if self.writing:
            self.poller.unregister(self.worker.cmd_fd)
            self.writing = False

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
        run = self.run_state
        for payload in payloads:
            if self.phase is _Phase.CALLS and self.sent_up_to == run.next_index:
                # An answer to the call in flight arrived: the worker may start the next
                # call while this process decodes and checks the answer (if it is not a
                # valid result for that call, the worker is replaced anyway).
                self.sent_up_to = run.next_index + 1
                self._send_input(self.sent_up_to)
            try:
                if self._on_message(_protocol.decode(payload)):
                    return True
            except SandboxError:
                raise  # the worker failed before any program ran (trusted start-up)
            except Exception as exc:
                self._on_violation(_violation_text(exc))
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
            uid = message.get("uid")
            run.worker_uid = uid if type(uid) is int else None
            self.phase = _Phase.LOAD
            self.deadline = now + _hard_timeout(run.load_timeout)
            return False
        if self.phase is _Phase.LOAD:
            error = message.get("e")
            if kind == "load_error" and type(error) is str:
                self._on_load_error(_clip(error, self.limits.traceback_chars + 200))
                return True
            if kind != "ready":
                raise _protocol.ProtocolError(f"unexpected {kind!r} message during load")
            run.loaded_once = True
            self.phase = _Phase.CALLS
            self.deadline = now + _hard_timeout(self.limits.call_timeout_s)
            self.call_started = now
            return run.done
        index = message.get("i")
        if kind == "recycle" and type(index) is int and index == run.next_index and self.calls:
            self.worker.stop(wait_s=1.0)
            return True
        result, spent = self._result(*self._checked_result(message))
        run.record(result)
        if spent:
            run.fill_rest(CallStatus.ERROR, spent)
            return True
        self.calls += 1
        self.deadline = now + _hard_timeout(self.limits.call_timeout_s)
        self.call_started = now
        return run.done

    def _checked_result(
        self, message: dict[str, Any]
    ) -> tuple[int, CallStatus, Any, str | None, str, float]:
        """The fields of a result for the call in flight, each of its exact type and range,
        or :class:`ProtocolError`."""
        run = self.run_state
        expected = run.next_index
        keys = set(message)
        if message.get("t") != "result" or not keys <= {"t", "i", "s", "e", "o", "d", "v"}:
            raise _protocol.ProtocolError(f"unexpected message {sorted(keys)!r}")
        index = message.get("i")
        if type(index) is not int or index != expected:
            raise _protocol.ProtocolError(f"result for index {index!r}, expected {expected}")
        raw_status = message.get("s")
        if type(raw_status) is not str or raw_status not in _STATUS_VALUES:
            raise _protocol.ProtocolError("result with an unknown status")
        status = CallStatus(raw_status)
        error, output, duration = message.get("e"), message.get("o"), message.get("d")
        ok = status is CallStatus.OK
        if ok != ("v" in message) or ok != (error is None):
            raise _protocol.ProtocolError("result value/error do not match its status")
        if type(output) is not str or not (error is None or type(error) is str):
            raise _protocol.ProtocolError("result output or error is not a string")
        if not isinstance(duration, int | float) or type(duration) is bool:
            raise _protocol.ProtocolError("result duration is not a number of seconds")
        if not 0 <= duration <= _MAX_DURATION_S:
            raise _protocol.ProtocolError("result duration is out of range")
        return index, status, message.get("v"), error, output, float(duration)

    def _result(
        self,
        index: int,
        status: CallStatus,
        value: Any,
        error: str | None,
        output: str,
        duration: float,
    ) -> tuple[CallResult, str | None]:
        """The result to record, and why the run's budget for results is spent, if it now is."""
        run = self.run_state
        limits = self.limits
        output = _clip(output, limits.output_chars + 100)
        error = None if error is None else _clip(error, limits.traceback_chars + 200)
        spent: str | None = None
        try:
            run.value_used += _protocol.value_size(
                [value, output, error], run.value_budget - run.value_used
            )
        except _protocol.ValueRejected as exc:
            status, value, error = CallStatus.ERROR, None, str(exc)
            if exc.over_budget:
                spent = (
                    f"not run: the run's budget for results ({limits.result_memory_mb:g} MB "
                    "decoded) is spent"
                )
                error = spent.replace("not run: ", "")
        result = CallResult(
            index=index,
            status=status,
            value=value,
            error=error,
            output=output,
            duration_s=min(duration, _hard_timeout(limits.call_timeout_s)),
        )
        return result, spent

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
    """At most ``limit`` characters of untrusted text, with control characters escaped."""
    text = text if len(text) <= limit else text[:limit] + "[... cut]"
    return _protocol.safe_text(text)


def _violation_text(exc: Exception) -> str:
    if isinstance(exc, _protocol.ProtocolError):
        return str(exc)
    return f"{type(exc).__name__} while reading it"


class Sandbox:
    """Runs programs over inputs in contained workers; reusable, one worker per run at a time.

    ``use_bubblewrap``: None uses it when usable; True requires it. Without it the sandbox runs
    in weak mode, which needs ``allow_weak=True`` or ``AMORTIZED_SANDBOX_ALLOW_WEAK=1``
    (otherwise :class:`SandboxError` says how to get bubblewrap). docs/sandbox.md has the
    threat model of both modes.
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        use_bubblewrap: bool | None = None,
        allow_weak: bool | None = None,
    ) -> None:
        self.limits = limits or SandboxLimits()
        available = bubblewrap_available()
        if use_bubblewrap and not available:
            raise SandboxError("bubblewrap was requested but bwrap is missing or not permitted")
        self.use_bubblewrap = available if use_bubblewrap is None else use_bubblewrap
        if allow_weak is None:
            allow_weak = os.environ.get(WEAK_MODE_ENV, "").strip().lower() in {"1", "true", "yes"}
        if not self.use_bubblewrap and not allow_weak:
            why = "switched off" if available else "bwrap missing or not permitted"
            raise SandboxError(_WEAK_REFUSAL.format(why=why))
        self.mode = "bubblewrap" if self.use_bubblewrap else "weak"

    def run(
        self,
        source: str,
        inputs: Sequence[Any],
        *,
        entrypoint: str = "solve",
        driver: str | None = None,
        progress: bool = False,
        cancel: threading.Event | None = None,
    ) -> ProgramRun:
        """Call ``entrypoint`` (or ``driver(entrypoint_function, input)``) on every input.

        ``driver`` is a trusted ``module:function``, imported in the worker before the guard.
        Inputs must be JSON-serializable; results come back in input order. Setting
        ``cancel`` (from another thread) ends the run within about 0.1 s: the worker is
        killed and the calls not yet made are errors.
        """
        if not isinstance(source, str):
            raise SandboxError("source must be a string")
        if not isinstance(entrypoint, str) or not entrypoint.isidentifier():
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
        identity = _identity.acquire()
        workdir = _launch.WORK_DIR_INSIDE
        try:
            if not self.use_bubblewrap:
                workdir = _cleanup.make_private_dir("amortized-sandbox-")
            limits = self.enforced_limits(identity)
            config = self._config(source, entrypoint, driver, workdir, identity, limits)
            state = _Run(
                self.limits, self.use_bubblewrap, config, frames, workdir, progress, cancel
            )
            state.execute()
        finally:
            if not self.use_bubblewrap:
                _cleanup.remove_tree(workdir)
            if identity is not None:
                identity.release()
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
            mode=self.mode,
            limits={**limits, "uid": state.worker_uid, "seccomp": state.seccomp},
        )

    def enforced_limits(self, identity: _identity.WorkerIdentity | None) -> dict[str, Any]:
        """The limits a run's workers get, as the kernel will see them."""
        limits = self.limits
        return {
            "call_timeout_s": limits.call_timeout_s,
            "total_timeout_s": limits.total_timeout_s,
            "cpu_time_s": limits.cpu_time_s,
            "memory_mb": limits.memory_mb,
            "file_size_mb": limits.file_size_mb,
            "disk_write_bytes": 0,
            "nproc": _nproc_limit(limits.max_processes, own_uid=identity is not None),
            "threads": 0,
            "output_chars": limits.output_chars,
            "result_memory_mb": limits.result_memory_mb,
            "network": "none" if self.use_bubblewrap else "no sockets (seccomp)",
        }

    def _config(
        self,
        source: str,
        entrypoint: str,
        driver: str | None,
        workdir: str,
        identity: _identity.WorkerIdentity | None,
        enforced: dict[str, Any],
    ) -> dict[str, Any]:
        limits = self.limits
        return {
            "source": source,
            "entrypoint": entrypoint,
            "driver": driver,
            "workdir": workdir,
            "identity": None if identity is None else {"uid": identity.uid, "gid": identity.gid},
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
                "nproc": enforced["nproc"],
                "output_chars": limits.output_chars,
                "traceback_chars": limits.traceback_chars,
                "max_value_bytes": _protocol.MAX_VALUE_BYTES,
                "recursion_limit": _RECURSION_LIMIT,
                "stack_mb": _STACK_MB,
            },
        }
