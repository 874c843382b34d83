"""The policy sandbox: results, limits, and an adversarial suite, with and without bubblewrap.

Every attack runs as input 0 of a two-input run (input 1 must still succeed, so the run goes
on), and the same Sandbox must then run a normal program: nothing an attack does may outlive it.
"""

import math
import os
import socket
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from amortized.planners.sandbox import (
    CallResult,
    CallStatus,
    ProgramRun,
    Sandbox,
    SandboxError,
    SandboxLimits,
    bubblewrap_available,
)
from amortized.planners.sandbox._protocol import FrameReader, frame
from amortized.planners.sandbox._sandbox import _nproc_limit
from amortized.planners.sandbox._seccomp import build_filter
from tests.planners.sandbox_modes import MODES

REPO = Path(__file__).resolve().parents[2]
LIMITS = SandboxLimits(call_timeout_s=0.5, total_timeout_s=60.0, max_restarts=3)


@pytest.fixture(scope="module", params=MODES)
def sandbox(request: pytest.FixtureRequest) -> Sandbox:
    return Sandbox(LIMITS, use_bubblewrap=request.param, allow_weak=True)


def weak(limits: SandboxLimits = LIMITS) -> Sandbox:
    """A sandbox in weak mode (no bubblewrap), explicitly allowed."""
    return Sandbox(limits, use_bubblewrap=False, allow_weak=True)


def program(body: str) -> str:
    return textwrap.dedent(body).strip() + "\n"


ECHO = program(
    """
    def solve(x):
        print("seen", x)
        return {"double": x * 2, "pair": (x, x)}
    """
)


def assert_healthy(sandbox: Sandbox) -> None:
    """A normal program still runs correctly on this Sandbox."""
    run = sandbox.run(ECHO, [1, 2, 3])
    assert run.load_error is None
    assert [r.value for r in run.results] == [{"double": 2 * x, "pair": [x, x]} for x in (1, 2, 3)]


def attack(sandbox: Sandbox, body: str, arg: object = "attack") -> tuple[CallResult, ProgramRun]:
    """Run ``body`` (defining ``attack(arg)``) on input 0; input 1 must still succeed."""
    source = program(body) + program(
        """
        def solve(x):
            if x == "ok":
                return "fine"
            return attack(x["arg"])
        """
    )
    run = sandbox.run(source, [{"arg": arg}, "ok"])
    assert run.load_error is None, run.load_error
    assert [r.index for r in run.results] == [0, 1]
    assert run.results[1].status is CallStatus.OK, run.results[1]
    assert run.results[1].value == "fine"
    return run.results[0], run


def assert_blocked(result: CallResult, *fragments: str) -> None:
    assert result.status in (CallStatus.ERROR, CallStatus.TIMEOUT), result
    assert result.value is None
    assert result.error is not None
    assert any(f in result.error for f in fragments), result.error


def has_kernel_filter(run: ProgramRun) -> bool:
    return "seccomp" in run.sandboxed_by


# -- normal operation -------------------------------------------------------------------------


def test_results_in_order_with_output(sandbox: Sandbox) -> None:
    run = sandbox.run(ECHO, list(range(20)))
    assert run.load_error is None
    assert run.worker_starts == 1
    assert [r.index for r in run.results] == list(range(20))
    assert [r.value for r in run.results] == [{"double": 2 * i, "pair": [i, i]} for i in range(20)]
    assert all(r.status is CallStatus.OK and r.error is None for r in run.results)
    assert run.results[7].output == "seen 7\n"
    assert run.counts() == {"ok": 20, "timeout": 0, "error": 0}
    assert run.sandboxed_by.endswith("rlimits")
    assert run.sandboxed_by.startswith("bwrap") == sandbox.use_bubblewrap


def test_one_worker_serves_many_inputs(sandbox: Sandbox) -> None:
    source = program(
        """
        import collections
        CALLS = collections.Counter()
        def solve(x):
            CALLS["n"] += 1
            return [x["i"], CALLS["n"]]
        """
    )
    run = sandbox.run(source, [{"i": i} for i in range(1000)])
    assert run.worker_starts == 1
    assert [r.value for r in run.results] == [[i, i + 1] for i in range(1000)]


def test_empty_inputs_still_check_the_program(sandbox: Sandbox) -> None:
    assert sandbox.run(ECHO, []).results == []
    assert sandbox.run("def solve(:\n", []).load_error is not None


def test_drivers_wrap_each_call(sandbox: Sandbox) -> None:
    act = program(
        """
        def act(observation):
            return "right" if observation["step"] % 2 else "left"
        """
    )
    run = sandbox.run(
        act,
        [{"steps": 3, "goal": [1, 1]}, {"steps": 1}],
        entrypoint="act",
        driver="amortized.planners.sandbox._drivers:loop_driver",
    )
    assert [r.value for r in run.results] == [["left", "right", "left"], ["left"]]
    echo = sandbox.run(ECHO, [5], driver="amortized.planners.sandbox._drivers:echo_driver")
    assert echo.results[0].value == {"double": 10, "pair": [5, 5]}


def test_stdlib_and_numpy_imports_work(sandbox: Sandbox) -> None:
    source = program(
        """
        import heapq, itertools, math, random, textwrap, difflib
        def solve(x):
            try:
                import numpy as np
                total = int(np.arange(x).sum())
            except ImportError:
                total = sum(range(x))
            return [heapq.nsmallest(1, [3, x])[0], total, textwrap.shorten("a b c d", 5)]
        """
    )
    assert sandbox.run(source, [4]).results[0].value == [3, 6, "[...]"]


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("def solve(x)\n    return x\n", "SyntaxError"),
        ("def other(x):\n    return x\n", "defines no 'solve' function"),
        ("solve = 3\n", "'solve' is not callable"),
        ("import subprocess\ndef solve(x):\n    return x\n", "not available in the sandbox"),
        ("raise ValueError('at import')\ndef solve(x):\n    return x\n", "at import"),
    ],
    ids=["syntax", "missing", "not-callable", "denied-import", "raises"],
)
def test_load_errors_fail_every_input(sandbox: Sandbox, source: str, fragment: str) -> None:
    run = sandbox.run(source, [1, 2, 3])
    assert run.load_error is not None
    assert fragment in run.load_error
    assert all(r.status is CallStatus.ERROR and r.error == run.load_error for r in run.results)
    assert run.worker_starts == 1


def test_module_level_infinite_loop_is_a_load_error() -> None:
    run = weak(LIMITS).run("while True:\n    pass\n", [1])
    assert run.load_error is not None
    assert "timed out" in run.load_error


def test_exception_traceback_is_truncated_at_its_end() -> None:
    limits = SandboxLimits(call_timeout_s=1.0, traceback_chars=300)
    source = program(
        """
        def helper(x):
            raise ValueError("boom " * 1000 + "END")
        def solve(x):
            if x:
                return helper(x)
            return "fine"
        """
    )
    run = weak(limits).run(source, [1, 0])
    error = run.results[0].error
    assert run.results[0].status is CallStatus.ERROR
    assert error is not None
    assert len(error) <= 300 + 200
    assert error.rstrip().endswith("END")
    assert "characters cut" in error
    assert run.results[1].value == "fine"


def test_traceback_shows_program_lines_not_the_worker() -> None:
    source = "def solve(x):\n    return 1 / x\n"
    error = weak(LIMITS).run(source, [0]).results[0].error
    assert error is not None
    assert 'File "<program>", line 2, in solve' in error
    assert "ZeroDivisionError" in error
    assert "_worker.py" not in error


@pytest.mark.parametrize(
    ("returned", "status", "value", "fragment"),
    [
        ("(1, [2, (3,)])", CallStatus.OK, [1, [2, [3]]], None),
        ("{1, 2}", CallStatus.ERROR, None, "not JSON-serializable"),
        ("float('nan')", CallStatus.ERROR, None, "not JSON-serializable"),
        ("'x' * (2 * 2**20)", CallStatus.ERROR, None, "too large"),
    ],
    ids=["tuples-become-lists", "set", "nan", "too-large"],
)
def test_return_values_must_be_bounded_json(
    returned: str, status: CallStatus, value: object, fragment: str | None
) -> None:
    run = weak(LIMITS).run(f"def solve(x):\n    return {returned}\n", [0])
    result = run.results[0]
    assert (result.status, result.value) == (status, value)
    assert fragment is None or (result.error is not None and fragment in result.error)


def test_no_file_can_be_written_and_the_environment_is_minimal(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMORTIZED_SANDBOX_SECRET", "leak")
    source = program(
        """
        import os
        def solve(x):
            if x == "write":
                with open("scratch.txt", "a") as f:
                    f.write("x")
            return [os.getcwd(), os.environ.get("HOME"), sorted(os.environ), os.listdir(".")]
        """
    )
    run = sandbox.run(source, ["write", "look"])
    assert_blocked(run.results[0], "Permission denied", "not permitted", "Read-only")
    cwd, home, env, entries = run.results[1].value
    assert cwd == home
    assert entries == []
    assert "AMORTIZED_SANDBOX_SECRET" not in env
    assert "PATH" in env
    assert sandbox.use_bubblewrap or not Path(cwd).exists()


# -- limits, timeouts and restarts ------------------------------------------------------------


def test_soft_timeout_keeps_the_worker(sandbox: Sandbox) -> None:
    source = program(
        """
        def solve(x):
            while x == 1:
                x = x * 1
            return x
        """
    )
    run = sandbox.run(source, [0, 1, 2])
    assert [r.status for r in run.results] == [CallStatus.OK, CallStatus.TIMEOUT, CallStatus.OK]
    assert "time limit" in (run.results[1].error or "")
    assert run.worker_starts == 1


def test_hard_timeout_kills_respawns_and_continues(sandbox: Sandbox) -> None:
    # Catching the soft timeout (a BaseException) leaves only the parent's kill.
    source = program(
        """
        import time
        def solve(x):
            while x == 3:
                try:
                    time.sleep(10)
                except BaseException:
                    pass
            return x
        """
    )
    run = sandbox.run(source, list(range(8)))
    assert run.results[3].status is CallStatus.TIMEOUT
    assert "worker killed" in (run.results[3].error or "")
    assert [r.value for r in run.results if r.index != 3] == [0, 1, 2, 4, 5, 6, 7]
    assert run.worker_starts == 2


def test_too_many_restarts_stop_the_run() -> None:
    limits = SandboxLimits(call_timeout_s=1.0, max_restarts=2)
    run = weak(limits).run("import os\nsolve = os._exit\n", [1] * 6)
    errors = [r.error or "" for r in run.results]
    assert all("worker exited with code 1" in e for e in errors[:3])
    assert all("too many worker restarts" in e for e in errors[3:])
    assert run.worker_starts == 3


def test_total_timeout_ends_the_run() -> None:
    limits = SandboxLimits(call_timeout_s=1.0, total_timeout_s=2.0)
    source = "import time\ndef solve(x):\n    time.sleep(0.5)\n    return x\n"
    run = weak(limits).run(source, list(range(10)))
    statuses = [r.status for r in run.results]
    assert statuses[0] is CallStatus.OK
    assert CallStatus.TIMEOUT in statuses
    assert statuses[-1] is CallStatus.ERROR
    assert "total time limit" in (run.results[-1].error or "")
    assert run.wall_s < 4.0


def test_cpu_limit_recycles_the_worker_between_calls() -> None:
    limits = SandboxLimits(call_timeout_s=1.0, cpu_time_s=1)
    source = "import time\ndef solve(x):\n    end = time.process_time() + 0.2\n    while time.process_time() < end:\n        pass\n    return x\n"  # noqa: E501
    run = weak(limits).run(source, list(range(8)))
    assert [r.value for r in run.results] == list(range(8))
    assert run.worker_starts >= 2


def test_misuse_raises_sandbox_error() -> None:
    sandbox = weak(LIMITS)
    with pytest.raises(SandboxError, match="JSON-serializable"):
        sandbox.run(ECHO, [object()])
    with pytest.raises(SandboxError, match="module:function"):
        sandbox.run(ECHO, [1], driver="no-colon")
    with pytest.raises(SandboxError, match="identifier"):
        sandbox.run(ECHO, [1], entrypoint="not valid")
    with pytest.raises(SandboxError, match="failed to start"):
        sandbox.run(ECHO, [1], driver="amortized.no_such_module:drive")
    with pytest.raises(SandboxError, match="call_timeout_s"):
        SandboxLimits(call_timeout_s=0)


# -- adversarial suite ------------------------------------------------------------------------


def test_reading_etc_passwd_is_refused(sandbox: Sandbox) -> None:
    for body in (
        "def attack(arg):\n    return open('/etc/passwd').read()\n",
        "import pathlib\ndef attack(arg):\n    return pathlib.Path('/etc/passwd').read_text()\n",
        "import io\ndef attack(arg):\n    return io.FileIO('/etc/passwd').read().decode()\n",
        "import os\ndef attack(arg):\n    return os.read(os.open('/etc/passwd', 0), 99)\n",
    ):
        result, _ = attack(sandbox, body)
        assert_blocked(result, "not allowed", "disabled")
    assert_healthy(sandbox)


def test_listing_home_is_refused(sandbox: Sandbox) -> None:
    for body in (
        "import os\ndef attack(arg):\n    return os.listdir('/root')\n",
        "import glob\ndef attack(arg):\n    return glob.glob('/home/*') + glob.glob('/root/*')"
        " or 1 / 0\n",
    ):
        result, _ = attack(sandbox, body)
        assert_blocked(result, "not allowed", "ZeroDivisionError")
    assert_healthy(sandbox)


def test_writing_outside_the_workdir_is_refused(sandbox: Sandbox) -> None:
    targets = [Path("/tmp") / f"escape-{uuid.uuid4().hex}", REPO / f"escape-{uuid.uuid4().hex}"]
    for target in targets:
        for body in (
            "def attack(arg):\n    open(arg, 'w').write('x')\n",
            "import os\ndef attack(arg):\n    os.close(os.open(arg, os.O_CREAT | os.O_WRONLY))\n",
            "import pathlib\ndef attack(arg):\n    pathlib.Path(arg).touch()\n",
            "import os\ndef attack(arg):\n    os.symlink(arg, 'link')\n    open('link', 'w')\n",
        ):
            result, _ = attack(sandbox, body, str(target))
            assert_blocked(result, "not allowed", "disabled")
            assert not target.exists()
    assert_healthy(sandbox)


def test_shell_and_subprocess_are_refused(sandbox: Sandbox) -> None:
    target = Path("/tmp") / f"escape-{uuid.uuid4().hex}"
    for body in (
        "import os\ndef attack(arg):\n    return os.system('touch ' + arg)\n",
        "def attack(arg):\n    import subprocess\n    subprocess.run(['touch', arg])\n",
        "def attack(arg):\n    __import__('subprocess').run(['touch', arg])\n",
        "import os\ndef attack(arg):\n    os.execv('/usr/bin/touch', ['touch', arg])\n",
        "import os\ndef attack(arg):\n    os.posix_spawn('/usr/bin/touch', ['touch', arg], {})\n",
    ):
        result, _ = attack(sandbox, body, str(target))
        assert_blocked(result, "disabled", "not available")
        assert not target.exists()
    assert_healthy(sandbox)


def test_network_is_unreachable(sandbox: Sandbox) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        bodies = [
            "def attack(port):\n    import socket\n"
            "    socket.create_connection(('127.0.0.1', port), timeout=1)\n",
            # Determined: re-import the C module the guard hid; only the kernel stops this.
            "import sys\ndef attack(port):\n    sys.modules.pop('_socket', None)\n"
            "    _socket = sys.modules['importlib'].import_module('_socket')\n"
            "    s = _socket.socket(2, 1)\n    s.settimeout(1)\n"
            "    s.connect(('127.0.0.1', port))\n",
        ]
        for body in bodies:
            result, _ = attack(sandbox, body, port)
            assert_blocked(result, "not available", "not permitted", "unreachable", "refused")
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()
    assert_healthy(sandbox)


def test_fork_bomb_is_contained(sandbox: Sandbox) -> None:
    # Bounded to 200 children that exit at once, so even an escape could not hurt the host.
    bomb = """
        def attack(arg):
            children = 0
            for _ in range(200):
                if fork() == 0:
                    exit_now(0)
                children += 1
            return children
    """
    plain = "import os\nfork, exit_now = os.fork, os._exit\n" + textwrap.dedent(bomb)
    result, _ = attack(sandbox, plain)
    assert_blocked(result, "disabled")
    determined = (
        "import sys\nsys.modules.pop('posix')\n"
        "posix = sys.modules['importlib'].import_module('posix')\n"
        "fork, exit_now = posix.fork, posix._exit\n" + textwrap.dedent(bomb)
    )
    result, run = attack(sandbox, determined)
    if not has_kernel_filter(run):
        pytest.skip("no seccomp on this platform: a re-imported posix.fork is not stopped")
    assert_blocked(result, "not permitted")
    assert_healthy(sandbox)


def test_signals_to_other_processes_are_refused(sandbox: Sandbox) -> None:
    # Signal 0 only probes, so nothing happens to the test process even if it got through.
    result, _ = attack(sandbox, "import os\ndef attack(arg):\n    os.kill(os.getppid(), 0)\n")
    assert_blocked(result, "disabled")
    determined = (
        "import sys\nsys.modules.pop('posix')\n"
        "posix = sys.modules['importlib'].import_module('posix')\n"
        "def attack(arg):\n    posix.kill(posix.getppid(), 0)\n"
    )
    result, run = attack(sandbox, determined)
    if has_kernel_filter(run):
        assert_blocked(result, "not permitted")
    assert_healthy(sandbox)


def test_ctypes_reached_through_numpy_cannot_run_commands(sandbox: Sandbox) -> None:
    pytest.importorskip("numpy")
    target = Path("/tmp") / f"escape-{uuid.uuid4().hex}"
    body = """
        import numpy
        def attack(arg):
            ctypes = numpy.core._internal.ctypes
            if ctypes.CDLL(None).system(("touch " + arg).encode()) != 0:
                raise OSError("system() failed")
    """
    result, run = attack(sandbox, body, str(target))
    if not has_kernel_filter(run):
        pytest.skip("no seccomp on this platform")
    assert_blocked(result, "system() failed")
    assert not target.exists()
    assert_healthy(sandbox)


def test_infinite_loop_times_out(sandbox: Sandbox) -> None:
    result, run = attack(sandbox, "def attack(arg):\n    while True:\n        pass\n")
    assert result.status is CallStatus.TIMEOUT
    assert run.worker_starts == 1
    assert_healthy(sandbox)


def test_memory_bomb_is_a_memory_error(sandbox: Sandbox) -> None:
    for body in (
        "def attack(arg):\n    return len(bytearray(10 * 1024**3))\n",
        "def attack(arg):\n    hoard = []\n    while True:\n"
        "        hoard.append(bytes(50 * 2**20))\n",
    ):
        result, _ = attack(sandbox, body)
        assert_blocked(result, "memory limit")
    assert_healthy(sandbox)


def test_giant_output_is_truncated(sandbox: Sandbox) -> None:
    source = "import sys\ndef solve(x):\n    sys.stdout.write('x' * 10**8)\n    print('y')\n    return 1\n"  # noqa: E501
    result = sandbox.run(source, [0]).results[0]
    assert result.status is CallStatus.OK
    assert result.value == 1
    assert len(result.output) <= LIMITS.output_chars + 100
    assert "more characters not kept" in result.output


@pytest.mark.parametrize(
    ("body", "fragment", "starts"),
    [
        ("import sys\ndef attack(arg):\n    sys.exit(3)\n", "SystemExit: 3", 1),
        ("def attack(arg):\n    raise KeyboardInterrupt\n", "KeyboardInterrupt", 1),
        ("import os\ndef attack(arg):\n    os._exit(3)\n", "worker exited with code 3", 2),
        ("def attack(arg):\n    exit(3)\n", "NameError", 1),
    ],
    ids=["sys.exit", "KeyboardInterrupt", "os._exit", "builtin-exit"],
)
def test_exits_are_errors(sandbox: Sandbox, body: str, fragment: str, starts: int) -> None:
    result, run = attack(sandbox, body)
    assert_blocked(result, fragment)
    assert run.worker_starts == starts


def test_deep_recursion(sandbox: Sandbox) -> None:
    result, _ = attack(sandbox, "def attack(n):\n    return attack(n + 1)\n", 0)
    assert_blocked(result, "RecursionError")
    # Recursion through C frames with the limit lifted overflows the C stack: a crash,
    # reported for this call only.
    crash = (
        "import sys\ndef attack(n):\n    sys.setrecursionlimit(10**8)\n    return dive(0)\n"
        "def dive(n):\n    return sorted([0], key=lambda _: dive(n + 1))\n"
    )
    result, _ = attack(sandbox, crash, 0)
    # On a loaded machine the dive may hit the call's time limit before the stack runs out;
    # contained either way.
    assert_blocked(result, "signal 11", "RecursionError", "memory limit", "time limit")
    assert_healthy(sandbox)


def test_junk_on_inherited_fds_is_a_protocol_error(sandbox: Sandbox) -> None:
    body = """
        def subclasses(cls):
            for sub in type.__subclasses__(cls):
                yield sub
                yield from subclasses(sub)

        def attack(arg):
            import sys
            raw = next(c for c in subclasses(object) if c.__name__ == "FileIO")
            # Every low descriptor, and the pipes the worker was given (its argv names them).
            for fd in [*range(3, 21), *map(int, sys.argv[1:3])]:
                try:
                    raw(fd, "w", closefd=False).write(b"\\xff" * 64)
                except OSError:
                    pass
            return "wrote junk"
    """
    result, run = attack(sandbox, body)
    assert_blocked(result, "malformed message")
    assert run.worker_starts == 2
    blocked, _ = attack(sandbox, "import os\ndef attack(arg):\n    os.write(5, b'junk')\n")
    assert_blocked(blocked, "disabled")
    assert_healthy(sandbox)


def test_monkeypatching_the_harness_does_not_change_other_results(sandbox: Sandbox) -> None:
    body = """
        import builtins, json, sys
        def attack(arg):
            json.dumps = lambda *a, **k: '{"t": "result", "i": 99}'
            json.JSONEncoder.encode = lambda *a, **k: "junk"
            harness = sys.modules["__main__"]
            for name in dir(harness):
                if not name.startswith("__") and callable(getattr(harness, name)):
                    setattr(harness, name, lambda *a, **k: None)
            builtins.print = None
            return "patched"
    """
    result, run = attack(sandbox, body)
    # The patches hit copies the worker no longer uses: the call returns its own value.
    assert result.status is CallStatus.OK
    assert result.value == "patched"
    assert run.worker_starts == 1
    assert_healthy(sandbox)


def test_forged_results_only_claim_the_programs_own_calls(sandbox: Sandbox) -> None:
    # A program can write well-formed results for itself; the parent still only accepts the
    # requested indices, in order, and never more than one per input. Values stay untrusted.
    source = program(
        """
        import json, sys
        def subclasses(cls):
            for sub in type.__subclasses__(cls):
                yield sub
                yield from subclasses(sub)

        def solve(x):
            if x == 0:
                raw = next(c for c in subclasses(object) if c.__name__ == "FileIO")
                for fd in [*range(3, 21), *map(int, sys.argv[1:3])]:
                    for i in (0, 1, 7, 0, 99):
                        msg = {"t": "result", "i": i, "s": "ok", "e": None, "o": "", "d": 0,
                               "v": "forged"}
                        data = json.dumps(msg).encode()
                        try:
                            raw(fd, "w", closefd=False).write(len(data).to_bytes(4, "big") + data)
                        except OSError:
                            pass
            return x
        """
    )
    run = sandbox.run(source, list(range(4)))
    assert [r.index for r in run.results] == [0, 1, 2, 3]
    for result in run.results:
        assert result.status is not CallStatus.OK or result.value in ("forged", result.index)
    assert run.results[3].value == 3 or run.results[3].status is not CallStatus.OK
    assert_healthy(sandbox)


def test_determined_file_escape_is_contained_by_bubblewrap() -> None:
    """Without bwrap the Python guard is bypassable (this is why bwrap is used when usable)."""
    if not bubblewrap_available():
        pytest.skip("bubblewrap not usable")
    sandbox = Sandbox(LIMITS, use_bubblewrap=True)
    targets = [Path("/tmp") / f"escape-{uuid.uuid4().hex}", REPO / f"escape-{uuid.uuid4().hex}"]
    body = """
        def subclasses(cls):
            for sub in type.__subclasses__(cls):
                yield sub
                yield from subclasses(sub)

        RAW = next(c for c in subclasses(object) if c.__name__ == "FileIO")

        def attack(arg):
            if arg.startswith("read:"):
                return RAW(arg[5:]).read().decode()
            RAW(arg, "w").write(b"escaped")
            return "written"
    """
    for target in targets:
        result, _ = attack(sandbox, body, str(target))
        # /tmp is a private tmpfs in the sandbox, the rest of the root is read-only.
        assert result.status is not CallStatus.OK or str(target).startswith("/tmp/")
        assert not target.exists()
    for hidden in ("/etc/shadow", "/root/.bashrc"):
        result, _ = attack(sandbox, body, "read:" + hidden)
        assert result.status is CallStatus.ERROR or result.value == ""
    assert_healthy(sandbox)


# -- internals --------------------------------------------------------------------------------


def test_frame_reader_keeps_frames_before_a_bad_one() -> None:
    reader = FrameReader(max_frame=10)
    payloads, broken = reader.feed(frame(b"ok") + frame(b"x" * 11))
    assert payloads == [b"ok"]
    assert broken is not None
    whole, none = FrameReader(max_frame=10).feed(frame(b"a")[:3])
    assert (whole, none) == ([], None)


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_seccomp_filter_builds(machine: str) -> None:
    code = build_filter(machine, pid=1234)
    assert code is not None
    assert len(code) % 8 == 0
    assert len(code) // 8 < 200
    assert build_filter("sparc", pid=1) is None


def test_limits_are_validated() -> None:
    assert SandboxLimits().max_processes > 0
    with pytest.raises(SandboxError):
        SandboxLimits(memory_mb=-1)
    with pytest.raises(SandboxError):
        SandboxLimits(total_timeout_s=math.nan)


def test_worker_uses_this_interpreter() -> None:
    run = weak(LIMITS).run("import sys\ndef solve(x):\n    return sys.version\n", [0])
    assert run.results[0].value == sys.version


def test_nproc_headroom_counts_the_users_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _nproc_limit(64, own_uid=True) == 64  # a run's own uid: exact
    monkeypatch.setattr(os, "getuid", lambda: 0)
    assert _nproc_limit(64) is None  # root is not limited; its workers get their own uid
    monkeypatch.setattr(os, "getuid", lambda: 424242)
    assert _nproc_limit(64) == 64


def test_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    run = weak(LIMITS).run(ECHO, [1, 2], progress=True)
    assert run.counts()["ok"] == 2
    assert "2/2" in capsys.readouterr().err


def test_a_cancelled_run_ends_at_once(sandbox: Sandbox) -> None:
    import threading
    import time

    cancel = threading.Event()
    source = "import time\ndef solve(x):\n    time.sleep(0.2)\n    return x\n"
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    started = time.monotonic()
    run = sandbox.run(source, list(range(200)), cancel=cancel)
    took = time.monotonic() - started
    timer.cancel()
    assert took < 5.0  # 200 calls of 0.2 s would take 40 s
    assert run.results[0].status is CallStatus.OK
    assert "cancelled" in (run.results[-1].error or "")
    assert len(run.results) == 200
    assert_healthy(sandbox)
