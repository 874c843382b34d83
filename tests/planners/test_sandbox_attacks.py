"""Attacks on the sandbox by a program that gets past the Python guard, in both modes.

Each program reaches the kernel directly: raw ``FileIO`` found through
``object.__subclasses__()`` and libc through the ctypes that numpy carries. Probes that could
do harm if they got through target the worker itself or rewrite a value unchanged, so a breach
is detected without hurting the host; the host's state is compared before and after every
test. Removing a defence makes these tests fail (checked by hand for each one: docs/sandbox.md).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import stat
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from amortized.planners.sandbox._cleanup import remove_tree
from tests.planners.sandbox_modes import MODES

REPO = Path(__file__).resolve().parents[2]
LIMITS = SandboxLimits(call_timeout_s=2.0, total_timeout_s=120.0, max_restarts=5)
X86_64 = platform.machine() == "x86_64"


pytest.importorskip("numpy")  # the programs reach ctypes through numpy


@pytest.fixture(scope="module", params=MODES)
def sandbox(request: pytest.FixtureRequest) -> Sandbox:
    return Sandbox(LIMITS, use_bubblewrap=request.param, allow_weak=True)


PRELUDE = textwrap.dedent(
    """
    import json, sys
    import numpy

    def _subclasses(cls):
        for sub in type.__subclasses__(cls):
            yield sub
            yield from _subclasses(sub)

    RAW = next(c for c in _subclasses(object) if c.__name__ == "FileIO")
    ctypes = numpy.core._internal.ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    POSIX = type(sys)("posix")
    for _name in ("listdir", "readlink", "getpid", "getppid", "getuid"):
        setattr(POSIX, _name, getattr(sys.modules["posix"], _name, None))

    def _c(arg):
        return ctypes.c_char_p(arg.encode()) if isinstance(arg, str) else ctypes.c_long(arg)

    def syscall(*args):
        result = libc.syscall(*[_c(a) for a in args])
        return [result, ctypes.get_errno()]

    def read(path):
        return RAW(path).read().decode(errors="replace")

    def write(path, data):
        RAW(path, "w").write(data.encode() if isinstance(data, str) else data)
        return "written"

    def start_threads(count):
        start = sys.modules["_thread"].start_new_thread
        started = 0
        for _ in range(count):
            try:
                start(lambda: None, ())
                started += 1
            except RuntimeError:
                pass
        return started
    """
)


def run_attack(sandbox: Sandbox, body: str, args: list[Any]) -> ProgramRun:
    """``attack(arg)`` on each of ``args``, then a normal call that must still succeed."""
    source = (
        PRELUDE
        + textwrap.dedent(body)
        + textwrap.dedent(
            """
            def solve(x):
                if x == "ok":
                    return "fine"
                return attack(x["arg"])
            """
        )
    )
    run = sandbox.run(source, [{"arg": a} for a in args] + ["ok"])
    assert run.load_error is None, run.load_error
    assert run.results[-1].status is CallStatus.OK, run.results[-1]
    assert run.results[-1].value == "fine"
    return run


def refused(result: CallResult, *fragments: str) -> bool:
    """The call failed with one of ``fragments`` in its error."""
    error = result.error or ""
    return result.status is not CallStatus.OK and any(f in error for f in fragments)


ERRNO_EPERM = 1


def _sysctl(name: str) -> str:
    return Path("/proc/sys", *name.split(".")).read_text()


def host_state() -> dict[str, Any]:
    """What an escaped program would change: kernel settings, our process, shared folders."""
    state: dict[str, Any] = {}
    for name in ("kernel.printk_ratelimit_burst", "kernel.core_pattern", "kernel.hostname"):
        try:
            state[name] = _sysctl(name)
        except OSError:
            state[name] = None
    state["rlimits"] = {
        name: resource.getrlimit(getattr(resource, name))
        for name in dir(resource)
        if name.startswith("RLIMIT_")
    }
    state["priority"] = os.getpriority(os.PRIO_PROCESS, 0)
    state["affinity"] = sorted(os.sched_getaffinity(0))
    state["scheduler"] = os.sched_getscheduler(0)
    state["tmp"] = sorted(
        p.name for p in Path("/tmp").iterdir() if p.name.startswith(("amortized-sandbox", "esc-"))
    )
    state["shm"] = (
        sorted(p.name for p in Path("/dev/shm").iterdir()) if Path("/dev/shm").is_dir() else []
    )
    return state


@pytest.fixture(autouse=True)
def host_unchanged() -> Iterator[None]:
    before = host_state()
    yield
    assert host_state() == before


# -- never root; kernel interfaces ------------------------------------------------------------


def test_the_program_never_runs_as_root(sandbox: Sandbox) -> None:
    run = run_attack(
        sandbox,
        """
        def attack(arg):
            status = read("/proc/self/status")
            ids = [line for line in status.splitlines() if line.startswith(("Uid", "Gid", "Cap"))]
            limits = {}
            for line in read("/proc/self/limits").splitlines()[1:]:
                name, soft = line[:26].strip(), line[26:47].strip()
                limits[name] = soft
            return [POSIX.getuid(), ids, limits]
        """,
        [0],
    )
    uid, lines, kernel_limits = run.results[0].value
    # The limits the run reports are the ones the kernel holds the worker to.
    assert kernel_limits["Max address space"] == str(LIMITS.memory_mb * 2**20)
    assert kernel_limits["Max file size"] == str(LIMITS.file_size_mb * 2**20)
    assert kernel_limits["Max core file size"] == "0"
    assert kernel_limits["Max processes"] == str(run.limits["nproc"])
    assert uid != 0
    assert run.limits["uid"] == uid
    for line in lines:
        if line.startswith(("Uid", "Gid")):
            assert set(line.split()[1:]) == {str(uid)}, line
        if line.startswith(("CapEff", "CapPrm", "CapAmb")):
            assert int(line.split()[1], 16) == 0, line
    if os.geteuid() == 0:
        assert run.limits["nproc"] == LIMITS.max_processes  # exact: the run's own uid


def test_kernel_settings_are_read_only(sandbox: Sandbox) -> None:
    # Each attempt rewrites the current value, so even a breach would change nothing.
    names = ["kernel/printk_ratelimit_burst", "kernel/core_pattern", "vm/drop_caches"]
    run = run_attack(
        sandbox,
        """
        def attack(name):
            path = "/proc/sys/" + name
            try:
                current = read(path)
            except OSError:
                current = ""
            if name == "vm/drop_caches":
                current = "1"  # write-only knob; asking the kernel to drop caches is harmless
            return write(path, current)
        """,
        names,
    )
    for name, result in zip(names, run.results, strict=False):
        assert refused(result, "Read-only", "Permission denied", "not permitted", "No such"), (
            name,
            result,
        )


def test_sysrq_sys_and_proc_of_others_are_out_of_reach(sandbox: Sandbox) -> None:
    targets = [
        ("write", "/proc/sysrq-trigger", ""),  # an empty write would be a no-op anyway
        ("write", "/sys/kernel/uevent_helper", ""),
        ("read", f"/proc/{os.getpid()}/environ", ""),
        ("read", f"/proc/{os.getpid()}/mem", ""),
        ("read", "/proc/1/environ", ""),
    ]
    run = run_attack(
        sandbox,
        """
        def attack(target):
            how, path, data = target
            if how == "write":
                return write(path, data)
            with RAW(path) as f:
                return f.read(16).decode(errors="replace")
        """,
        [list(t) for t in targets],
    )
    for target, result in zip(targets, run.results, strict=False):
        if target[1] == "/proc/1/environ" and sandbox.use_bubblewrap:
            # PID 1 of the sandbox's own namespace is bwrap: not the host's init.
            assert result.status is not CallStatus.OK or "PATH" not in str(result.value)
            continue
        assert refused(result, "Permission denied", "not permitted", "No such", "Read-only"), (
            target,
            result,
        )


# -- files ------------------------------------------------------------------------------------


@pytest.fixture
def secrets() -> Iterator[dict[str, Path]]:
    """A root-only file in the home folder and a readable file next to the tests."""
    home_secret = Path.home() / f"amortized-secret-{uuid.uuid4().hex}"
    home_secret.write_text("home-secret")
    home_secret.chmod(0o600)
    tests_file = Path(__file__).parent / f"esc-{uuid.uuid4().hex}.txt"
    tests_file.write_text("next-to-the-script")
    try:
        yield {"home": home_secret, "tests": tests_file}
    finally:
        home_secret.unlink()
        tests_file.unlink()


def test_root_only_and_caller_files_are_unreadable(
    sandbox: Sandbox, secrets: dict[str, Path]
) -> None:
    paths = ["/etc/shadow", "/etc/shadow-", "/etc/gshadow-", str(secrets["home"])]
    if sandbox.use_bubblewrap:
        # Only the allowlist is mounted: not the caller's folders, not /etc/passwd.
        paths += [str(secrets["tests"]), "/etc/passwd", os.getcwd() + "/pyproject.toml"]
    paths = [p for p in paths if os.path.exists(p)]
    run = run_attack(sandbox, "def attack(path):\n    return read(path)\n", paths)
    for path, result in zip(paths, run.results, strict=False):
        assert refused(result, "Permission denied", "No such file"), (path, result)


def test_nothing_can_be_written_anywhere(sandbox: Sandbox) -> None:
    marker = f"esc-{uuid.uuid4().hex}"
    targets = [
        f"/tmp/{marker}",
        f"/dev/shm/{marker}",
        f"{REPO}/{marker}",
        marker,  # the work directory
    ]
    run = run_attack(
        sandbox,
        """
        def attack(path):
            if path.startswith("mkdir:"):
                return syscall(83, path[6:], 0o777)
            if path.startswith("open:"):  # the legacy open(2), which Python itself never uses
                return syscall(2, path[5:], 0o1 | 0o100, 0o644)
            return write(path, b"x" * (200 * 2**20) if path.startswith("big") else "x")
        """,
        [*targets, "big-" + marker, "mkdir:" + marker, f"open:/tmp/{marker}"],
    )
    for result in run.results[:-3]:
        assert refused(result, "Permission denied", "not permitted", "Read-only"), result
    if X86_64:
        assert run.results[-3].value == [-1, ERRNO_EPERM]
        assert run.results[-2].value == [-1, ERRNO_EPERM]
    for target in targets:
        assert not os.path.exists(target)
    assert run.limits["disk_write_bytes"] == 0


def test_state_does_not_carry_over_between_runs(sandbox: Sandbox) -> None:
    name = f"esc-{uuid.uuid4().hex}"
    places = [name, f"/tmp/{name}", f"/dev/shm/{name}"]
    writer = """
        def attack(places):
            for path in places:
                try:
                    write(path, "from the first run")
                except OSError:
                    pass
            return "tried"
    """
    reader = """
        def attack(places):
            found = []
            for path in places:
                try:
                    found.append(read(path))
                except OSError:
                    pass
            return found
    """
    run_attack(sandbox, writer, [places])
    assert run_attack(sandbox, reader, [places]).results[0].value == []
    assert not any(os.path.exists(p) for p in places[1:])


def test_inherited_descriptors_are_only_the_pipes_and_import_folders(sandbox: Sandbox) -> None:
    run = run_attack(
        sandbox,
        """
        def attack(arg):
            fds = {}
            for name in POSIX.listdir("/proc/self/fd"):
                try:
                    fds[name] = POSIX.readlink("/proc/self/fd/" + name)
                except OSError:
                    pass
            return [fds, sys.path]
        """,
        [0],
    )
    fds, import_path = run.results[0].value
    for fd, target in fds.items():
        allowed = (
            target == "/dev/null"
            or target.startswith("pipe:")
            or target.startswith("/proc/")  # the listing itself
            or any(target == p or target.startswith(p + "/") for p in import_path)
            or (
                os.path.isdir(target)
                and any(str(p).startswith("/proc/self/fd/") for p in import_path)
            )
        )
        assert allowed, (fd, target)
    assert not any(t.startswith(("socket:", "anon_inode:")) for t in fds.values())


# -- processes, threads, signals, scheduling, limits -------------------------------------------


@pytest.mark.skipif(not X86_64, reason="syscall numbers are x86-64's")
def test_threads_and_processes_cannot_start(sandbox: Sandbox) -> None:
    run = run_attack(
        sandbox,
        """
        def attack(how):
            if how == "threads":
                return start_threads(3000)
            if how == "clone-thread":  # CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD
                return syscall(56, 0x100 | 0x200 | 0x400 | 0x800 | 0x10000, 0, 0, 0, 0)
            if how == "fork":
                return syscall(57)
            return syscall(435, 0, 0)  # clone3
        """,
        ["threads", "clone-thread", "fork", "clone3"],
    )
    assert run.results[0].value == 0
    assert run.results[1].value == [-1, ERRNO_EPERM]
    assert run.results[2].value == [-1, ERRNO_EPERM]
    assert run.results[3].value[0] == -1
    assert run.limits["threads"] == 0


@pytest.mark.skipif(not X86_64, reason="syscall numbers are x86-64's")
def test_signals_scheduling_and_limits_are_refused(sandbox: Sandbox) -> None:
    # Every probe targets the worker itself with a no-op (signal 0, the current priority,
    # limits or affinity): only the filter can refuse them, and a breach would harm nothing.
    probes = {
        "kill": "syscall(62, POSIX.getpid(), 0)",
        "tkill": "syscall(200, POSIX.getpid(), 0)",
        "rt_sigqueueinfo": "syscall(129, POSIX.getpid(), 0, ctypes.addressof(info))",
        "rt_tgsigqueueinfo": (
            "syscall(297, POSIX.getpid(), POSIX.getpid(), 0, ctypes.addressof(info))"
        ),
        "pidfd_open": "syscall(434, POSIX.getpid(), 0)",
        "setpriority": "syscall(141, 0, 0, 0)",
        "sched_setaffinity": "syscall(203, 0, 128, ctypes.addressof(mask))",
        "sched_setscheduler": "syscall(144, 0, 0, ctypes.addressof(param))",
        "prlimit64-set": "syscall(302, 0, 7, ctypes.addressof(limit), 0)",
        "prlimit64-other": "syscall(302, 1, 7, 0, ctypes.addressof(limit))",
        "setrlimit": "syscall(160, 7, ctypes.addressof(limit))",
        "ptrace": "syscall(101, 16, 1, 0, 0)",
        "socket": "syscall(41, 2, 1, 0)",
        "unshare": "syscall(272, 0x20000)",
        "x32-getpid": "syscall(0x40000000 | 39)",
        "fcntl-setown": "syscall(72, 1, 8, POSIX.getpid())",
        "ioctl-tiocsti": "syscall(16, 0, 0x5412, ctypes.addressof(info))",
        "mknod": "syscall(133, 'node', 0o10644, 0)",
        "chmod": "syscall(90, '.', 0o777)",
        "prctl": "syscall(157, 4, 1, 0, 0, 0)",
    }
    body = """
        info = ctypes.create_string_buffer(128)
        mask = ctypes.create_string_buffer(128)
        param = ctypes.create_string_buffer(8)
        limit = ctypes.create_string_buffer(16)
        libc.sched_getaffinity(0, 128, mask)
        libc.prlimit(0, 7, None, limit)

        def attack(name):
            return eval(PROBES[name])
    """
    source_probes = "PROBES = " + json.dumps(probes) + "\n"
    run = run_attack(sandbox, source_probes + textwrap.dedent(body), list(probes))
    for name, result in zip(probes, run.results, strict=False):
        assert result.status is CallStatus.OK, (name, result)
        assert result.value == [-1, ERRNO_EPERM], (name, result.value)
    allowed = run_attack(
        sandbox,
        source_probes
        + textwrap.dedent(body)
        + "PROBES.update(read_limit='syscall(302, 0, 7, 0, ctypes.addressof(limit))',"
        " self_signal='syscall(234, POSIX.getpid(), POSIX.getpid(), 0)')\n",
        ["read_limit", "self_signal"],
    )
    assert [r.value[0] for r in allowed.results[:2]] == [0, 0]  # what stays possible


@pytest.mark.skipif(not X86_64, reason="i386 machine code")
def test_the_i386_entry_point_kills_the_worker(sandbox: Sandbox) -> None:
    # mov eax, 20 (getpid on i386); int 0x80; ret
    run = run_attack(
        sandbox,
        """
        def attack(arg):
            code = bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])
            libc.mmap.restype = ctypes.c_void_p
            libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                                  ctypes.c_int, ctypes.c_long]
            page = libc.mmap(None, 4096, 7, 0x22, -1, 0)
            ctypes.memmove(page, code, len(code))
            return ctypes.CFUNCTYPE(ctypes.c_int)(page)()
        """,
        [0],
    )
    assert refused(run.results[0], "SIGSYS"), run.results[0]
    assert run.worker_starts == 2


# -- the parent: forged frames, budgets, text ---------------------------------------------------


FORGE = """
    def forge(message):
        data = json.dumps(message).encode()
        RAW(int(sys.argv[2]), "w", closefd=False).write(len(data).to_bytes(4, "big") + data)

    def attack(arg):
        message = {"t": "result", "i": arg["i"], "s": "ok", "e": None, "o": "", "d": 0, "v": 1}
        message.update(arg["patch"])
        forge(message)
        return "forged"
"""


@pytest.mark.parametrize(
    "patch",
    [
        {"s": ["ok"]},
        {"s": {"ok": 1}},
        {"d": 10**400},
        {"d": True},
        {"d": -1},
        {"i": True},
        {"e": 5, "s": "error"},
        {"o": None},
        {"t": ["result"]},
        {"extra": 1},
    ],
    ids=lambda p: json.dumps(p)[:30],
)
def test_forged_frames_are_that_calls_error(sandbox: Sandbox, patch: dict[str, Any]) -> None:
    run = run_attack(sandbox, FORGE, [{"i": 0, "patch": patch}])
    assert refused(run.results[0], "malformed message"), run.results[0]
    assert run.worker_starts == 2  # the worker was replaced; the next call ran normally


def test_a_result_for_a_later_call_is_refused(sandbox: Sandbox) -> None:
    run = run_attack(sandbox, FORGE, [{"i": 1, "patch": {}}])
    assert refused(run.results[0], "malformed message"), run.results[0]
    assert "expected 0" in (run.results[0].error or "")


def test_the_result_budget_bounds_the_parents_memory() -> None:
    limits = SandboxLimits(call_timeout_s=5.0, result_memory_mb=40)
    sandbox = Sandbox(limits, allow_weak=True)
    source = "def solve(x):\n    return [[] for _ in range(300_000)]\n"  # 900 KB JSON, ~19 MB
    run = sandbox.run(source, list(range(6)))
    statuses = [r.status for r in run.results]
    assert statuses[:2] == [CallStatus.OK, CallStatus.OK]
    assert all(s is CallStatus.ERROR for s in statuses[2:])
    assert "budget" in (run.results[2].error or "")
    assert "not run" in (run.results[-1].error or "")


def test_output_text_cannot_drive_a_terminal(sandbox: Sandbox) -> None:
    source = textwrap.dedent(
        """
        def solve(x):
            print("\\x1b]0;owned\\x07\\x1b[2J\\u202eevil\\ud800 end")
            if x == "value":
                return "\\udfff"
            raise ValueError("\\x1b[31mred\\x1b[0m")
        """
    )
    run = sandbox.run(source, ["error", "value"])
    for result in run.results:
        text = result.output + (result.error or "")
        text.encode("utf-8")  # no lone surrogates left
        assert "\x1b" not in text
        assert "\u202e" not in text
        assert "\x07" not in text
        assert "\\x1b" in text
    assert refused(run.results[1], "lone surrogate")


# -- cleanup and the weak mode ------------------------------------------------------------------


def test_cleanup_removes_a_hostile_tree_without_raising(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    root = tmp_path / "work"
    root.mkdir()
    node = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(3000):  # deeper than the recursion limit and PATH_MAX allow by path
            os.mkdir("d" * 40, dir_fd=node)
            child = os.open("d" * 40, os.O_RDONLY | os.O_DIRECTORY, dir_fd=node)
            os.close(node)
            node = child
        fd = os.open("setuid", os.O_WRONLY | os.O_CREAT, 0o4755, dir_fd=node)
        os.close(fd)
        os.symlink(str(outside), "link", dir_fd=node)
        os.mkdir("locked", 0, dir_fd=node)
    finally:
        os.close(node)
    assert remove_tree(str(root)) is None
    assert not root.exists()
    assert outside.read_text() == "keep me"


def test_weak_mode_needs_an_explicit_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMORTIZED_SANDBOX_ALLOW_WEAK", raising=False)
    with pytest.raises(SandboxError, match="AMORTIZED_SANDBOX_ALLOW_WEAK=1"):
        Sandbox(use_bubblewrap=False)
    monkeypatch.setenv("AMORTIZED_SANDBOX_ALLOW_WEAK", "1")
    run = Sandbox(use_bubblewrap=False).run("def solve(x):\n    return x\n", [1])
    assert (run.mode, run.results[0].value) == ("weak", 1)
    if bubblewrap_available():
        assert Sandbox().run("def solve(x):\n    return x\n", [1]).mode == "bubblewrap"


UNPRIVILEGED_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from amortized.planners.sandbox import Sandbox, bubblewrap_available
    source = sys.argv[1]
    modes = [False] + ([True] if bubblewrap_available() else [])
    out = {"parent_uid": os.getuid(), "runs": {}}
    for mode in modes:
        run = Sandbox(use_bubblewrap=mode, allow_weak=True).run(source, list(range(6)))
        out["runs"][run.mode] = {
            "results": [[r.status.value, r.value, r.error] for r in run.results],
            "uid": run.limits["uid"],
        }
    print(json.dumps(out))
    """
)
UNPRIVILEGED_PROGRAM = PRELUDE + textwrap.dedent(
    """
    def solve(x):
        if x == 0:
            return [POSIX.getuid(), syscall(62, POSIX.getppid(), 0)]
        if x == 1:
            return write("/proc/sys/kernel/printk_ratelimit_burst", read(
                "/proc/sys/kernel/printk_ratelimit_burst"))
        if x == 2:
            return write("/tmp/esc-unprivileged", "x")
        if x == 3:
            return start_threads(100)
        if x == 4:
            data = json.dumps({"t": "result", "i": 4, "s": ["ok"], "e": None, "o": "", "d": 0})
            RAW(int(sys.argv[2]), "w", closefd=False).write(
                len(data).to_bytes(4, "big") + data.encode())
            return "forged"
        return "fine"
    """
)


def _unprivileged_command() -> list[str] | None:
    """A command prefix that runs this interpreter as ``nobody``, if the machine allows it.

    Where the interpreter lives under a root-only folder (``/root``), bubblewrap (run as root)
    gives the unprivileged parent a view where that folder is passable; nothing else changes.
    """
    if os.geteuid() != 0:
        return []
    setpriv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    probe = [sys.executable, "-c", UNPRIVILEGED_SCRIPT, "def solve(x):\n    return x\n"]
    prefixes = [setpriv]
    if bubblewrap_available():
        home = ["--tmpfs", "/root"]
        interpreter = (sys.executable, sys.prefix, sys.base_prefix, *sys.path)
        tops = {"/".join(os.path.realpath(p).split("/")[:3]) for p in interpreter}
        for path in sorted(tops):  # e.g. /root/.pyenv
            if path.startswith("/root/") and os.path.exists(path):
                home += ["--ro-bind", path, path]
        prefixes.append(["bwrap", "--dev-bind", "/", "/", *home, "--", *setpriv])
    for prefix in prefixes:
        try:
            done = subprocess.run(
                [*prefix, *probe], capture_output=True, timeout=120, check=False, cwd="/"
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return prefix
    return None


def test_attacks_from_an_unprivileged_parent() -> None:
    prefix = _unprivileged_command()
    if prefix is None:
        pytest.skip("this interpreter cannot run as an unprivileged user on this machine")
    done = subprocess.run(
        [*prefix, sys.executable, "-c", UNPRIVILEGED_SCRIPT, UNPRIVILEGED_PROGRAM],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["parent_uid"] != 0
    assert set(report["runs"]) >= {"weak"}
    for mode, run in report["runs"].items():
        results = run["results"]
        uid, signal_probe = results[0][1]
        assert uid == report["parent_uid"], mode
        assert run["uid"] == uid, mode
        assert signal_probe == [-1, ERRNO_EPERM], mode
        for status, _value, error in results[1:3]:
            assert status == "error", (mode, results)
            assert error, (mode, results)
        assert results[3][:2] == ["ok", 0], mode
        assert results[4][0] == "error", mode
        assert "malformed message" in results[4][2], mode
        assert results[5][:2] == ["ok", "fine"], mode
    assert not os.path.exists("/tmp/esc-unprivileged")


def test_stat_of_the_lock_directory_is_private() -> None:
    if os.geteuid() != 0:
        pytest.skip("uids per run exist only under a root parent")
    Sandbox(LIMITS, allow_weak=True).run("def solve(x):\n    return x\n", [1])
    info = os.stat("/run/amortized-sandbox")
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == 0


def test_without_a_sandbox_the_route_says_what_to_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from amortized.planners.library import ProgramLibrary
    from amortized.planners.sandbox import _sandbox
    from amortized.serving.routes.planners.serving import PlannerService, PlannerUnavailable

    monkeypatch.delenv("AMORTIZED_SANDBOX_ALLOW_WEAK", raising=False)
    monkeypatch.setattr(_sandbox, "bubblewrap_available", lambda: False)
    service = PlannerService(None, library=ProgramLibrary(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(PlannerUnavailable, match="apt-get install bubblewrap"):
        _ = service.sandbox
