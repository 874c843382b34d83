"""Which device and dtype the steering stages run a transformers model in (``--device``,
``--dtype``); a bad value is an :class:`~amortized.errors.AmortizedError`, one line.

``auto`` device is CUDA when there is one, else the CPU. ``auto`` dtype is the checkpoint's
own dtype on an accelerator and float32 on the CPU, where bf16/fp16 matmuls are slow and
lose the precision the capture/CASAL equivalence is checked at. torch loads lazily, so the
CLI can check the spellings while parsing its arguments."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amortized.errors import AmortizedError

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "auto (cuda if available), cpu, cuda or cuda:N"
DTYPE_NAMES = ("float32", "bfloat16", "float16")
DTYPE_CHOICES = ("auto", *DTYPE_NAMES)
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_spec(spec: str) -> str:
    """``spec`` if it is an accepted spelling; whether CUDA is there is
    :func:`resolve_device`'s question."""
    if not _DEVICE.fullmatch(spec):
        raise AmortizedError(f"--device {spec!r}: use {DEVICE_HELP}")
    return spec


def check_dtype_spec(spec: str) -> str:
    """``spec`` if it is one of :data:`DTYPE_CHOICES`."""
    if spec not in DTYPE_CHOICES:
        raise AmortizedError(f"--dtype {spec!r}: use one of {', '.join(DTYPE_CHOICES)}")
    return spec


def resolve_device(spec: str | torch.device) -> torch.device:
    """The device ``spec`` names, or an error saying why it is not usable here."""
    import torch

    if isinstance(spec, torch.device):
        return spec
    check_device_spec(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AmortizedError(f"--device {spec}: CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise AmortizedError(f"--device {spec}: this machine has {count} CUDA device(s)")
    return device


def stored_dtype(config: Any) -> torch.dtype | None:
    """The floating dtype a checkpoint's config says its weights are in, if it says."""
    import torch

    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(value, str):
        value = getattr(torch, value.removeprefix("torch."), None)
    names = {getattr(torch, name): name for name in DTYPE_NAMES}
    return value if isinstance(value, torch.dtype) and value in names else None


def resolve_dtype(
    spec: str | torch.dtype, device: torch.device, stored: torch.dtype | None = None
) -> torch.dtype:
    """The dtype ``spec`` names; ``auto`` is ``stored`` (the checkpoint's; float32 when
    unknown) on an accelerator and float32 on the CPU."""
    import torch

    if isinstance(spec, torch.dtype):
        spec = str(spec).removeprefix("torch.")
    check_dtype_spec(spec)
    if spec != "auto":
        dtype: torch.dtype = getattr(torch, spec)
        return dtype
    if device.type == "cpu" or stored is None:
        return torch.float32
    return stored


def load_model(
    model_dir: str | Path,
    *,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device = "auto",
) -> tuple[Any, Any]:
    """A transformers causal LM and its tokenizer, in eval mode, its weights loaded straight
    onto ``device`` in ``dtype`` (see :func:`resolve_device` and :func:`resolve_dtype`)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    where = resolve_device(device)
    stored = None
    if dtype == "auto" and where.type != "cpu":
        stored = stored_dtype(AutoConfig.from_pretrained(str(model_dir)))
    precision = resolve_dtype(dtype, where, stored)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=precision, device_map=str(where)
    )
    model.eval()
    return model, tokenizer
