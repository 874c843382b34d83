"""The installed environment: vLLM and transformers import side by side (the torchvision trap)."""

import subprocess
import sys

import pytest

from amortized import environment


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )


def test_vllm_and_transformers_llama_import_together():
    proc = _run("import vllm; from transformers import LlamaConfig; print(vllm.__version__)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().startswith("0.32")


def test_no_cuda_companions_beside_cpu_vllm():
    assert environment.cpu_companions_installed() == []


@pytest.mark.slow
def test_doctor_reports_every_check_ok():
    proc = subprocess.run(
        [sys.executable, "-m", "amortized", "doctor"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 5
    assert all(line.startswith("ok") for line in lines if "optional" not in line), lines


def test_bubblewrap_check_matches_the_sandbox_probe():
    from amortized.planners.sandbox import bubblewrap_available

    result = environment.bubblewrap_check()
    assert result.required is False
    assert result.ok == bubblewrap_available()
    if not result.ok:
        assert result.label == "warn"
        assert "bubblewrap" in result.detail


def test_bubblewrap_is_there_where_the_test_setup_could_install_it():
    """`make test` runs `amortized doctor --fix --only bubblewrap` first (and says so in
    AMORTIZED_SANDBOX_TOOLS): as root on Debian that installs it, so CI exercises the
    sandbox's strongest mode instead of skipping it."""
    import os
    import shutil

    if not os.environ.get("AMORTIZED_SANDBOX_TOOLS"):
        pytest.skip("not run by `make test`: its set-up step did not run")
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("not root on Debian: the test set-up cannot install bubblewrap here")
    assert shutil.which("bwrap"), "run `amortized doctor --fix --only bubblewrap`"
