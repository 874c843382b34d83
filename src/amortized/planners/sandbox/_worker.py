"""The sandbox worker: load one program once, then call it on a stream of inputs.

Run as ``python -I -B -m amortized.planners.sandbox._worker CMD_FD RESULT_FD`` by
:class:`~amortized.planners.sandbox.Sandbox`. Order matters: read the configuration, import the
trusted driver and preloaded modules, apply rlimits, seccomp and the guard, and only then compile
the program. Everything the program can reach here (this module's globals, the pipes) is assumed
compromised once it runs; the parent validates every message, and this module keeps local
references to what it needs so that casual monkeypatching does not change its behaviour.
"""

from __future__ import annotations

import builtins
import importlib
import io
import json
import linecache
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any, BinaryIO

from amortized.planners.sandbox import _guard, _protocol, _seccomp

PROGRAM_FILENAME = "<program>"


class _SoftTimeout(BaseException):
    """Raised by SIGALRM inside a call; a BaseException so ``except Exception`` misses it."""


class BoundedWriter(io.TextIOBase):
    """stdout/stderr for one call: keeps the first ``limit`` characters, counts the rest."""

    encoding = "utf-8"

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit
        self._parts: list[str] = []
        self._kept = 0
        self._dropped = 0

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        room = self._limit - self._kept
        if room > 0:
            piece = text[:room]
            self._parts.append(piece)
            self._kept += len(piece)
            self._dropped += len(text) - len(piece)
        else:
            self._dropped += len(text)
        return len(text)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def getvalue(self) -> str:
        text = "".join(self._parts)
        if self._dropped:
            text += f"\n[... {self._dropped} more characters not kept]"
        return text


def truncate_tail(text: str, limit: int) -> str:
    """The last ``limit`` characters (a traceback's end says the most), marked if cut."""
    if len(text) <= limit:
        return text
    marker = f"[... {len(text) - limit} characters cut]\n"
    return marker + text[len(text) - limit :]


def format_exception(exc: BaseException, limit: int, skip_file: str) -> str:
    """A traceback without the worker's own frames, cut to ``limit`` characters."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == skip_file:
        tb = tb.tb_next
    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except BaseException:  # a program's __str__ may raise anything
        text = f"{type(exc).__name__} (the error could not be formatted)"
    return truncate_tail(text, limit)


def describe(exc: BaseException) -> str:
    """``Type: message``, even when the program's ``__str__`` misbehaves."""
    try:
        return f"{type(exc).__name__}: {exc}"
    except BaseException:
        return type(exc).__name__


def _read_exact(reader: BinaryIO, size: int) -> bytes | None:
    data = reader.read(size)
    if data is None or len(data) < size:
        return None
    return data


def _import_driver(spec: str) -> Callable[[Callable[..., Any], Any], Any]:
    module_name, _, function_name = spec.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    if not callable(function):
        raise TypeError(f"driver {spec!r} is not callable")
    return function  # type: ignore[no-any-return]


def become(identity: dict[str, int] | None) -> None:
    """Switch for good to the run's unprivileged uid and gid (a root parent asks for one).

    Done after the trusted imports (the interpreter may live where that uid cannot read) and
    before limits, the filter and the program. Switching every uid away from 0 clears all
    capabilities; the check makes a failed switch fatal rather than silent.
    """
    if os.getuid() == 0 and not identity:
        raise PermissionError("the worker runs as root but was given no uid to switch to")
    if not identity:
        return
    uid, gid = int(identity["uid"]), int(identity["gid"])
    if uid <= 0 or gid <= 0:
        raise PermissionError(f"refusing to run the program as uid {uid}, gid {gid}")
    # The interpreter may live where the new uid cannot pass (a root-only home folder): keep
    # a descriptor for each import folder so imports after the switch still find them.
    held: dict[int, int] = {}
    for position, entry in enumerate(sys.path):
        if entry and os.path.isdir(entry):
            held[position] = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise PermissionError("the switch to the sandbox uid did not take")
    if os.getgroups():
        raise PermissionError("supplementary groups survived the switch")
    _seccomp.make_dumpable()
    for position, fd in held.items():
        if os.access(sys.path[position], os.R_OK | os.X_OK):
            os.close(fd)
        else:
            sys.path[position] = f"/proc/self/fd/{fd}"
    sys.path_importer_cache.clear()


def main(argv: list[str]) -> None:
    """Serve one program until the parent closes the command pipe."""
    cmd_fd, result_fd = int(argv[0]), int(argv[1])
    _seccomp.die_with_parent()
    reader = open(cmd_fd, "rb", buffering=1 << 16, closefd=False)  # noqa: SIM115
    write = os.write
    exit_now = os._exit
    perf_counter = time.perf_counter
    process_time = time.process_time
    setitimer = signal.setitimer
    itimer_real = signal.ITIMER_REAL
    loads = json.loads
    dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
    sys_module = sys
    header = _protocol.HEADER
    this_file = __file__
    # Module globals can be replaced by the program (sys.modules["__main__"]); locals cannot.
    read_exact = _read_exact
    format_error = format_exception
    cut = truncate_tail
    describe_error = describe
    writer = BoundedWriter
    soft_timeout = _SoftTimeout

    def send(message: dict[str, Any], raw_value: str | None = None) -> None:
        text = dumps(message)
        if raw_value is not None:
            text = text[:-1] + ',"v":' + raw_value + "}"
        data = text.encode("utf-8", "surrogatepass")
        view = memoryview(header.pack(len(data)) + data)
        while view:
            view = view[write(result_fd, view) :]

    def read_message() -> dict[str, Any] | None:
        head = read_exact(reader, header.size)
        if head is None:
            return None
        (size,) = header.unpack(head)
        body = read_exact(reader, size)
        if body is None:
            return None
        message = loads(body)
        assert isinstance(message, dict)
        return message

    config = read_message()
    if config is None:
        exit_now(0)
    assert config is not None
    limits: dict[str, Any] = config["limits"]
    output_chars = int(limits["output_chars"])
    traceback_chars = int(limits["traceback_chars"])
    call_timeout = float(limits["call_timeout_s"])
    load_timeout = float(limits["load_timeout_s"])
    max_value = int(limits["max_value_bytes"])
    recycle_cpu = float(limits["recycle_cpu_s"])
    workdir = str(config["workdir"])

    try:
        driver = _import_driver(config["driver"]) if config.get("driver") else None
        _guard.preload(_guard.PRELOADED_MODULES, _guard.OPTIONAL_PRELOADED_MODULES)
        become(config.get("identity"))
    except BaseException as exc:
        send({"t": "fatal", "e": format_error(exc, traceback_chars, this_file)})
        exit_now(1)

    armed = [False]

    def on_alarm(signum: int, frame: Any) -> None:
        if armed[0]:
            raise soft_timeout

    signal.signal(signal.SIGALRM, on_alarm)
    linecache.cache[PROGRAM_FILENAME] = (
        len(config["source"]),
        None,
        config["source"].splitlines(keepends=True),
        PROGRAM_FILENAME,
    )
    sink = writer(0)
    # Whatever reaches the real fds 1 and 2 from now on (C code, os-level writes) is dropped.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stdout = sys.stderr = sink
    sys.stdin = io.StringIO()
    sys.setrecursionlimit(int(limits["recursion_limit"]))
    sys.dont_write_bytecode = True
    try:
        _guard.apply_limits(
            cpu_s=int(limits["cpu_time_s"]),
            memory_mb=int(limits["memory_mb"]),
            file_size_mb=int(limits["file_size_mb"]),
            nproc=limits.get("nproc"),
            stack_mb=int(limits["stack_mb"]),
        )
        seccomp_problem = _seccomp.install()
        _guard.apply_guard(workdir=workdir, read_roots=[p for p in sys.path if p])
    except BaseException as exc:
        send({"t": "fatal", "e": format_error(exc, traceback_chars, this_file)})
        exit_now(1)
    send(
        {
            "t": "started",
            "seccomp": seccomp_problem is None,
            "why": seccomp_problem,
            "uid": os.getuid(),
        }
    )

    # Load the program: its module-level code runs under the load time limit.
    namespace: dict[str, Any] = {"__name__": "__program__", "__builtins__": builtins}
    load_error: str | None = None
    armed[0] = True
    setitimer(itimer_real, load_timeout)
    try:
        try:
            code = compile(config["source"], PROGRAM_FILENAME, "exec")
            exec(code, namespace)
        finally:
            setitimer(itimer_real, 0)
            armed[0] = False
    except soft_timeout:
        load_error = f"program load timed out (module-level code ran over {load_timeout:g} s)"
    except BaseException as exc:
        load_error = "program failed to load:\n" + format_error(exc, traceback_chars, this_file)
    sys_module.stdout = sys_module.stderr = sink
    entrypoint = str(config["entrypoint"])
    function = namespace.get(entrypoint)
    if load_error is None:
        if function is None:
            load_error = f"the program defines no {entrypoint!r} function"
        elif not callable(function):
            load_error = f"the program's {entrypoint!r} is not callable"
    if load_error is not None or not callable(function):
        send({"t": "load_error", "e": load_error})
        exit_now(0)
        return
    send({"t": "ready"})

    calls = 0
    while True:
        message = read_message()
        if message is None:
            exit_now(0)
        assert message is not None
        index = message["i"]
        if calls and process_time() > recycle_cpu:
            # Hand over to a fresh worker before RLIMIT_CPU kills this one mid-call.
            send({"t": "recycle", "i": index})
            exit_now(0)
        calls += 1
        argument = message["x"]
        out = writer(output_chars)
        status = "ok"
        error: str | None = None
        raw: str | None = None
        stage = "call"
        started = perf_counter()
        sys_module.stdout = sys_module.stderr = out
        armed[0] = True
        setitimer(itimer_real, call_timeout)
        try:
            try:
                value = driver(function, argument) if driver is not None else function(argument)
                stage = "serialize"
                raw = dumps(value)
            finally:
                setitimer(itimer_real, 0)
                armed[0] = False
        except soft_timeout:
            status, raw = "timeout", None
            error = f"call exceeded the {call_timeout:g} s time limit"
            if stage == "serialize":
                error += " (while serializing the return value)"
        except MemoryError as exc:
            status, raw = "error", None
            error = f"memory limit ({limits['memory_mb']} MB) reached: " + format_error(
                exc, traceback_chars, this_file
            )
        except BaseException as exc:
            status, raw = "error", None
            if stage == "serialize":
                error = cut(
                    f"return value is not JSON-serializable: {describe_error(exc)}", traceback_chars
                )
            else:
                error = format_error(exc, traceback_chars, this_file)
        duration = perf_counter() - started
        sys_module.stdout = sys_module.stderr = sink
        if raw is not None and len(raw) > max_value:
            error = f"return value too large ({len(raw)} characters of JSON > {max_value})"
            status, raw = "error", None
        if status == "ok" and duration > call_timeout:
            status, raw = "timeout", None
            error = f"call exceeded the {call_timeout:g} s time limit"
        result = {"t": "result", "i": index, "s": status, "e": error, "o": out.getvalue()}
        result["d"] = round(duration, 6)
        send(result, raw)


INTERNAL_ERROR_EXIT = 70
"""Exit code when the worker itself fails (e.g. out of memory outside a call)."""

if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    finally:
        os._exit(INTERNAL_ERROR_EXIT)
