"""``amortized`` on bad input: non-zero exit, one line that says what to fix, no traceback."""

import json
import os
import socket
import subprocess

import pytest

from tests.conftest import AMORTIZED


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AMORTIZED, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("amortized"), proc.stderr
    for needle in needles:
        assert needle in last, last
    return last


def test_missing_model_path(tmp_path):
    proc = run_cli("serve", str(tmp_path / "nope"))
    assert_one_line_error(proc, "does not exist")
    assert proc.stderr.count("\n") == 1


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    assert_one_line_error(run_cli("serve", str(tmp_path)), "no weights")


def test_unknown_option_points_at_the_separator():
    proc = run_cli("serve", "--max-model-len", "512")
    assert_one_line_error(proc, "unrecognized arguments: --max-model-len", "after `--`")
    assert proc.returncode == 2


def test_options_after_separator_only_for_serve():
    assert_one_line_error(run_cli("models", "path", "--", "--x"), "only for `amortized serve`")


def test_port_in_use(tiny_llama):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = run_cli("serve", str(tiny_llama.path), "--port", str(port))
    assert_one_line_error(proc, f"127.0.0.1:{port}", "--port")
    assert proc.stderr.count("\n") == 1


@pytest.mark.slow
def test_unknown_vllm_option_is_one_line(tiny_llama):
    proc = run_cli("serve", str(tiny_llama.path), "--port", "1", "--dry-run", "--", "--bogus")
    # dry-run does not start vLLM, so the option is only checked when serving for real
    assert proc.returncode == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    proc = run_cli("serve", str(tiny_llama.path), "--port", str(free), "--", "--bogus-flag")
    assert_one_line_error(proc, "vLLM rejected its options", "--bogus-flag")


def test_bad_capability_selection(tiny_llama):
    proc = run_cli(
        "serve", str(tiny_llama.path), "--dry-run", env={"AMORTIZED_CAPABILITIES": "nope"}
    )
    assert_one_line_error(proc, "AMORTIZED_CAPABILITIES", "nope")


def test_models_path_honours_cache_dir_env(tmp_path):
    proc = run_cli("models", "path", env={"AMORTIZED_CACHE_DIR": str(tmp_path)})
    assert proc.returncode == 0
    assert proc.stdout.strip().startswith(str(tmp_path / "models" / "amortized-default-"))


def test_build_tiny_then_dry_run(tmp_path):
    out = tmp_path / "tiny"
    assert run_cli("models", "build-tiny", str(out), "--architecture", "qwen2").returncode == 0
    proc = run_cli("serve", str(out), "--dry-run", "--port", "8111")
    assert proc.returncode == 0, proc.stderr
    assert f"vllm serve {out} --host 127.0.0.1 --port 8111" in proc.stdout


def test_an_unwritable_engine_log_is_one_line(tiny_llama, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    proc = run_cli("serve", str(tiny_llama.path), "--port", str(free), "--log-file", str(tmp_path))
    assert_one_line_error(proc, "cannot write the engine log", "--verbose")


@pytest.mark.slow
def test_a_failed_engine_start_is_one_line_quoting_the_log(tiny_llama, tmp_path):
    """The console stays short; the error names the engine's own reason and the log."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    log = tmp_path / "engine.log"
    argv = ["serve", str(tiny_llama.path), "--port", str(free), "--log-file", str(log)]
    proc = run_cli(*argv, "--", "--kv-cache-memory-bytes", "1")
    last = assert_one_line_error(proc, "vLLM failed", f"(engine log: {log})")
    assert "last error in the log: ValueError: No available memory for the cache blocks" in last
    assert len(proc.stderr.strip().splitlines()) == 2  # "starting vLLM ..." and the error
    assert "Traceback" in log.read_text()  # the details are in the log, not on the console
