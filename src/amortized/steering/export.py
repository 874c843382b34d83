"""Writing a CASAL-trained model as a normal Hugging Face folder that vLLM serves unchanged.

The export is a copy of the source folder in which only the trained tensors' bytes differ:
the shard(s) holding them are patched in place at those tensors' byte ranges (same header,
same order, every other tensor byte-identical), ``config.json`` gains an ``amortized_casal``
record (transformers and vLLM ignore unknown keys), and an amortized build manifest, when
the source has one, is rewritten so the folder still validates. Everything else is copied
byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from amortized.errors import AmortizedError
from amortized.models.folder import read_manifest, sha256_file, write_manifest

CONFIG_KEY = "amortized_casal"
INDEX_NAME = "model.safetensors.index.json"

_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


class ExportError(AmortizedError):
    """A checkpoint that cannot be exported as asked; the message says what to change."""


def _header(path: Path) -> tuple[int, dict[str, Any]]:
    """``(data_start, header)`` of a safetensors file, read without loading tensors."""
    try:
        with path.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
    except (OSError, struct.error, ValueError) as error:
        raise ExportError(f"{path} is not a readable safetensors file ({error})") from error
    if not isinstance(header, dict):
        raise ExportError(f"{path} has a malformed safetensors header")
    return 8 + size, header


def _weight_map(src: Path) -> dict[str, str]:
    """Tensor name -> shard file name, from the index when there is one, else the headers."""
    index = src / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ExportError(f"{index} is unreadable or has no weight_map ({error})") from error
        return {str(k): str(v) for k, v in weight_map.items()}
    shards = sorted(p for p in src.glob("*.safetensors") if p.is_file())
    if not shards:
        raise ExportError(f"{src} holds no *.safetensors weights to rewrite")
    mapping: dict[str, str] = {}
    for shard in shards:
        for name in _header(shard)[1]:
            if name != "__metadata__":
                mapping[name] = shard.name
    return mapping


def _tensor_bytes(name: str, value: torch.Tensor, entry: Mapping[str, Any], cast: bool) -> bytes:
    shape = [int(n) for n in entry["shape"]]
    if list(value.shape) != shape:
        raise ExportError(
            f"{name}: shape {list(value.shape)} differs from the checkpoint's {shape}"
        )
    dtype = _DTYPES.get(value.dtype)
    if dtype != entry["dtype"]:
        wanted = next((t for t, s in _DTYPES.items() if s == entry["dtype"]), None)
        if not (cast and wanted is not None and value.is_floating_point()):
            raise ExportError(
                f"{name}: dtype {value.dtype} differs from the checkpoint's {entry['dtype']}; "
                "cast it (or pass cast=True)"
            )
        value = value.to(wanted)
    data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    begin, end = (int(n) for n in entry["data_offsets"])
    if len(data) != end - begin:
        raise ExportError(f"{name}: {len(data)} bytes do not fill its {end - begin}-byte slot")
    return data


def export_checkpoint(
    src_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    provenance: Mapping[str, Any],
    *,
    overwrite: bool = False,
    cast: bool = False,
) -> Path:
    """Copy the model folder ``src_dir`` to ``out_dir`` with ``tensors`` (full state-dict
    names) replaced and ``provenance`` recorded under ``config.json``'s ``amortized_casal``.

    Written into a temp folder beside ``out_dir`` and renamed into place, so ``out_dir`` is
    either the complete export or untouched. Refuses a non-empty ``out_dir`` unless
    ``overwrite``, an unknown tensor name, or a shape or dtype that differs from the
    checkpoint's (``cast=True`` converts floating tensors to the checkpoint's dtype)."""
    if sys.byteorder != "little":
        raise ExportError("safetensors files are little-endian; export on a little-endian host")
    src, out = Path(src_dir).expanduser(), Path(out_dir).expanduser()
    if not (src / "config.json").is_file():
        raise ExportError(f"{src} has no config.json, so it is not a Hugging Face model folder")
    if not tensors:
        raise ExportError("no tensors to export")
    if out.resolve() == src.resolve():
        raise ExportError("out_dir is the source folder; export to a new folder")
    _check_target(out, overwrite)
    try:
        json.dumps(dict(provenance))
    except (TypeError, ValueError) as error:
        raise ExportError(f"provenance is not JSON-serialisable ({error})") from error

    weight_map = _weight_map(src)
    missing = sorted(name for name in tensors if name not in weight_map)
    if missing:
        raise ExportError(f"{src} has no tensor(s) {', '.join(missing)}")
    by_shard: dict[str, list[str]] = {}
    for name in sorted(tensors):
        by_shard.setdefault(weight_map[name], []).append(name)
    patches: dict[str, list[tuple[int, bytes]]] = {}
    for shard, names in by_shard.items():
        start, header = _header(src / shard)
        patches[shard] = []
        for name in names:
            entry = header.get(name)
            if not isinstance(entry, dict):
                raise ExportError(f"{src / shard} does not hold {name} as its index says")
            data = _tensor_bytes(name, tensors[name], entry, cast)
            patches[shard].append((start + int(entry["data_offsets"][0]), data))

    config = json.loads((src / "config.json").read_text())
    if not isinstance(config, dict):
        raise ExportError(f"{src / 'config.json'} is not a JSON object")
    from amortized import __version__

    record: dict[str, Any] = {
        **provenance,
        "source_model": str(src.resolve()),
        "source_shards_sha256": {shard: sha256_file(src / shard) for shard in sorted(patches)},
        "replaced_tensors": sorted(tensors),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "amortized_version": __version__,
    }
    if isinstance(config.get(CONFIG_KEY), dict):
        record["source_casal"] = config[CONFIG_KEY]
    config[CONFIG_KEY] = record
    manifest = read_manifest(src)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(src, staging, symlinks=False)
        for shard, edits in patches.items():
            with (staging / shard).open("r+b") as handle:
                for offset, data in edits:
                    handle.seek(offset)
                    handle.write(data)
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if manifest is not None:
            recipe = {
                "kind": "casal-export",
                "source": str(src.resolve()),
                "source_recipe": manifest.get("recipe"),
            }
            write_manifest(staging, recipe)
        _check_target(out, overwrite)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except OSError as error:
        raise ExportError(f"cannot write {out} ({error.strerror or error})") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _check_target(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    if any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} exists and is not empty; remove it or pass overwrite=True")


def casal_provenance(model_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``amortized_casal`` record of a model folder's ``config.json``, or None for a model
    that was not exported by CASAL."""
    path = Path(model_dir).expanduser() / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ExportError(f"cannot read {path} ({error})") from error
    record = config.get(CONFIG_KEY) if isinstance(config, dict) else None
    if record is None:
        return None
    if not isinstance(record, dict):
        raise ExportError(f"{path}: {CONFIG_KEY} is not an object")
    return record
