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
    assert len(lines) == 4
    assert all(line.startswith("ok") for line in lines)
