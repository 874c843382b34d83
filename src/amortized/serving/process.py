"""Run a server as a child process: free port, wait until healthy, stop its whole group.

Tests, benchmarks and demos share this so none of them leaks a vLLM engine process.
"""

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

from amortized.errors import AmortizedError


class ServerStartError(AmortizedError):
    """The server exited or never became healthy; the message ends with its log's tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 40) -> str:
    """Last ``lines`` lines of a log file (empty if it does not exist)."""
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class ServerProcess:
    """A server started from ``argv`` in its own process group, logging to ``log_path``."""

    def __init__(
        self,
        argv: Sequence[str],
        port: int,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 600.0,
    ) -> None:
        self.argv = list(argv)
        self.host = host
        self.port = port
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def root_url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, ``http://host:port/v1``."""
        return f"{self.root_url}/v1"

    def start(self) -> "ServerProcess":
        """Start the process and block until ``/health`` answers 200."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise ServerStartError(
                    f"server exited with code {code} during start-up; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            try:
                if httpx.get(f"{self.root_url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise ServerStartError(
            f"server not healthy after {self.startup_timeout:.0f} s; "
            f"log {self.log_path}:\n{log_tail(self.log_path)}"
        )

    @property
    def pid(self) -> int | None:
        """The server's own process (the leader of its group), while it runs."""
        return None if self._proc is None else self._proc.pid

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code once the server process ends within ``timeout`` s, else None."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the whole process group (engine workers included), SIGKILL after ``grace``."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def vllm_metric(root_url: str, name: str) -> float:
    """A vLLM metric from ``/metrics``, summed over its label sets (engines, models)."""
    import re

    text = httpx.get(f"{root_url}/metrics", timeout=10).text
    pattern = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$"
    values = [match.group(1) for match in re.finditer(pattern, text, re.M)]
    if not values:
        raise AmortizedError(f"{root_url}/metrics has no {name}")
    return sum(float(v) for v in values)


def running_requests(root_url: str) -> float:
    """vLLM's ``num_requests_running`` gauge (summed over engines)."""
    return vllm_metric(root_url, "vllm:num_requests_running")
