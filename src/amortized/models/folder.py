"""Checks and writes model folders so a broken one fails early with a clear message.

Folders amortized builds carry a manifest (file sizes and SHA-256) written last, so an
interrupted build or a file damaged later is told apart from a good folder.
"""

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amortized.errors import ModelError

MANIFEST_NAME = "amortized-build.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


@dataclass(frozen=True)
class ModelFolder:
    """A model folder that passed validation."""

    path: Path
    architectures: tuple[str, ...]
    manifest: dict[str, Any] | None = field(default=None, compare=False)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file (``hashlib.file_digest``: about 1 GB/s, so checks stay cheap)."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _content_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and p.name != MANIFEST_NAME)


def write_manifest(path: Path, recipe: dict[str, Any]) -> dict[str, Any]:
    """Record what built ``path`` and a checksum of every file; call it last."""
    manifest = {
        "recipe": recipe,
        "files": {
            p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in _content_files(path)
        },
    }
    (path / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The folder's manifest, or None when it has none (a folder not built by amortized)."""
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        return None
    try:
        data = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(
            f"{manifest_path} is unreadable ({exc}); delete {path} to rebuild it"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise ModelError(f"{manifest_path} is malformed; delete {path} to rebuild it")
    return data


def _check_manifest(path: Path, manifest: dict[str, Any]) -> None:
    for name, expected in sorted(manifest["files"].items()):
        file = path / name
        if not file.is_file():
            raise ModelError(f"model folder {path} is corrupt: {name} is missing")
        if file.stat().st_size != expected.get("bytes") or sha256_file(file) != expected.get(
            "sha256"
        ):
            raise ModelError(f"model folder {path} is corrupt: {name} does not match its checksum")


def validate_model_folder(path: str | os.PathLike[str]) -> ModelFolder:
    """Check that ``path`` is a complete Hugging Face model folder vLLM can load."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ModelError(
            f"model path {folder} does not exist; pass a local Hugging Face model "
            "folder (with config.json), or omit it to use the default model"
        )
    if not folder.is_dir():
        raise ModelError(f"model path {folder} is a file; pass the folder that holds config.json")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelError(f"{folder} has no config.json, so it is not a Hugging Face model folder")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{config_path} is not valid JSON ({exc})") from exc
    architectures = config.get("architectures") if isinstance(config, dict) else None
    if not isinstance(architectures, list) or not architectures:
        raise ModelError(f"{config_path} names no 'architectures'; vLLM needs one to load it")
    if not any(p.suffix in WEIGHT_SUFFIXES for p in folder.iterdir()):
        raise ModelError(f"{folder} holds no weights (*.safetensors or *.bin)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelError(f"{folder} holds no tokenizer (tokenizer.json or tokenizer.model)")
    manifest = read_manifest(folder)
    if manifest is not None:
        _check_manifest(folder, manifest)
    return ModelFolder(folder, tuple(str(a) for a in architectures), manifest)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(parent: Path, prefix: str) -> None:
    """Delete ``parent/<prefix><pid>`` folders whose process is gone (a killed build)."""
    for stale in parent.glob(f"{prefix}*"):
        pid = stale.name.removeprefix(prefix)
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Build into a sibling temp folder and move it to ``target`` only if the build succeeds.

    Staging folders left by a build that was killed are removed first, so they cannot
    fill the disk.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.partial-"
    remove_stale_partials(target.parent, prefix)
    staging = target.with_name(f"{prefix}{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_folder(
    target: Path,
    build: Callable[[Path], None],
    on_rebuild: Callable[[str], None] | None = None,
    force: bool = False,
) -> ModelFolder:
    """Return the valid folder at ``target``, (re)building it when missing or corrupt.

    ``target`` is a folder amortized owns, so one without a manifest counts as corrupt too.
    ``force`` rebuilds a good folder as well; it is replaced only once the new one is whole.
    """
    if target.exists() and not force:
        try:
            folder = validate_model_folder(target)
            if folder.manifest is not None:
                return folder
            problem = f"model folder {target} has no {MANIFEST_NAME}"
        except ModelError as exc:
            problem = str(exc)
        if on_rebuild is not None:
            on_rebuild(f"{problem}; rebuilding it")
    try:
        with staged_folder(target) as staging:
            build(staging)
    except OSError as exc:
        raise write_error(target, exc) from exc
    return validate_model_folder(target)


def write_error(target: Path, exc: OSError) -> ModelError:
    """One line for a failed write under ``target``: a full disk, or a folder not writable."""
    if exc.errno == errno.ENOSPC:
        return ModelError(
            f"no space left on the disk holding {target.parent} (nothing was kept); free "
            "space there or point AMORTIZED_CACHE_DIR (or --cache-dir) at a larger disk"
        )
    return ModelError(
        f"cannot write {target} ({exc.strerror or exc}); point AMORTIZED_CACHE_DIR "
        "or --cache-dir at a writable folder"
    )
