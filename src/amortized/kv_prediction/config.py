"""The predictor folder: JSON config + safetensors weights + the trained auxiliary model.

A predictor is only meaningful for the base model it was trained against, so the config
records that base's attention geometry and start-up refuses any served model that differs.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from amortized.errors import AmortizedError
from amortized.models.folder import sha256_file, validate_model_folder

CONFIG_NAME = "kv_predictor.json"
WEIGHTS_NAME = "kv_predictor.safetensors"
AUX_DIR_NAME = "aux"
FORMAT = "amortized-kv-predictor"
FORMAT_VERSION = 1
SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral")
"""Families whose keys are plain ``k_proj`` outputs + RoPE (no k-norm), as the maps assume."""


class PredictorError(AmortizedError):
    """A predictor folder is missing, damaged, or does not fit the model it is used with."""


class AttentionGeometry(BaseModel):
    """What a model's KV cache looks like; two models are KV-compatible iff these match."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_type: str
    num_layers: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)

    @property
    def kv_dim(self) -> int:
        """Width of one layer's merged-head K (or V) projection."""
        return self.num_kv_heads * self.head_dim

    @classmethod
    def from_hf_config(cls, config: dict[str, Any], where: str) -> "AttentionGeometry":
        """Read the geometry from a ``config.json`` dict; ``where`` names it in errors."""
        text = config.get("text_config", config)
        model_type = str(text.get("model_type", ""))
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise PredictorError(
                f"{where} is a {model_type or 'unknown'!r} model; KV prediction supports "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        heads = int(text["num_attention_heads"])
        hidden = int(text["hidden_size"])
        return cls(
            model_type=model_type,
            num_layers=int(text["num_hidden_layers"]),
            num_kv_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=int(text.get("head_dim") or hidden // heads),
            hidden_size=hidden,
            vocab_size=int(text["vocab_size"]),
        )

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str]) -> "AttentionGeometry":
        """Read ``folder/config.json``."""
        path = Path(folder) / "config.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise PredictorError(f"cannot read {path} ({exc})") from exc
        return cls.from_hf_config(data, str(Path(folder)))

    def mismatches(self, other: "AttentionGeometry") -> list[str]:
        """Human-readable differences, e.g. ``num_layers 8 != 4``."""
        mine, theirs = self.model_dump(), other.model_dump()
        return [f"{k} {mine[k]} != {theirs[k]}" for k in mine if mine[k] != theirs[k]]


class BaseModelRef(BaseModel):
    """The base model the predictor writes into, by path and fingerprint."""

    model_config = ConfigDict(extra="forbid")

    path: str
    geometry: AttentionGeometry
    config_sha256: str


class AuxModelRef(BaseModel):
    """The auxiliary model; a relative path is resolved against the predictor folder."""

    model_config = ConfigDict(extra="forbid")

    path: str = AUX_DIR_NAME
    geometry: AttentionGeometry
    origin: str = Field(description="'prune:0.25'-style or the path it was initialised from")


class WeightsRef(BaseModel):
    """The predictor's linear maps and their checksum."""

    model_config = ConfigDict(extra="forbid")

    file: str = WEIGHTS_NAME
    sha256: str


class ServingDefaults(BaseModel):
    """Defaults the connector uses; a server's ``--kv-transfer-config`` may override them."""

    model_config = ConfigDict(extra="forbid")

    min_prompt_tokens: int = Field(
        default=256, ge=2, description="shorter prompts run normal prefill; they gain nothing"
    )


class PredictorConfig(BaseModel):
    """Contents of ``kv_predictor.json``."""

    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    version: int = FORMAT_VERSION
    base: BaseModelRef
    aux: AuxModelRef
    layer_map: list[int] = Field(description="layer_map[i] = auxiliary layer read by base layer i")
    weights: WeightsRef
    serving: ServingDefaults = Field(default_factory=ServingDefaults)
    training: dict[str, Any] = Field(default_factory=dict)

    def check_consistent(self, where: str) -> None:
        """Layer map and geometries must agree; a hand-edited config is caught here."""
        if self.format != FORMAT or self.version != FORMAT_VERSION:
            raise PredictorError(
                f"{where}: format {self.format!r} v{self.version} is not "
                f"{FORMAT!r} v{FORMAT_VERSION}"
            )
        base, aux = self.base.geometry, self.aux.geometry
        if len(self.layer_map) != base.num_layers:
            raise PredictorError(
                f"{where}: layer_map has {len(self.layer_map)} entries but the base model "
                f"has {base.num_layers} layers"
            )
        bad = [i for i in self.layer_map if not 0 <= i < aux.num_layers]
        if bad:
            raise PredictorError(
                f"{where}: layer_map names auxiliary layers {bad} but the auxiliary model "
                f"has {aux.num_layers} layers"
            )
        if aux.vocab_size != base.vocab_size:
            raise PredictorError(
                f"{where}: auxiliary vocab_size {aux.vocab_size} != base vocab_size "
                f"{base.vocab_size}; both must share one tokenizer"
            )


def default_layer_map(base_layers: int, aux_layers: int) -> list[int]:
    """Spread base layers evenly over auxiliary ones: i -> floor(i * aux / base)."""
    return [i * aux_layers // base_layers for i in range(base_layers)]


def model_config_sha256(folder: str | os.PathLike[str]) -> str:
    """Fingerprint of a model's ``config.json`` (cheap; weights are not hashed)."""
    return sha256_file(Path(folder) / "config.json")


@dataclass(frozen=True)
class PredictorFolder:
    """A predictor folder that passed every check."""

    path: Path
    config: PredictorConfig

    @property
    def aux_path(self) -> Path:
        """Where the auxiliary model lives."""
        aux = Path(self.config.aux.path)
        return aux if aux.is_absolute() else self.path / aux

    @property
    def weights_path(self) -> Path:
        """The safetensors file with the K and V maps."""
        return self.path / self.config.weights.file

    @property
    def fingerprint(self) -> str:
        """Short id of these exact weights, used to name the prefix-cache namespace."""
        return self.config.weights.sha256[:16]


def load_predictor_folder(path: str | os.PathLike[str]) -> PredictorFolder:
    """Read and check a predictor folder: config schema, weight checksum, auxiliary model."""
    folder = Path(path).expanduser().resolve()
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise PredictorError(
            f"{folder} is not a KV predictor folder (no {CONFIG_NAME}); "
            "create one with `amortized kvp train`"
        )
    try:
        config = PredictorConfig.model_validate_json(config_path.read_text())
    except (OSError, ValidationError) as exc:
        first = str(exc).splitlines()
        raise PredictorError(
            f"{config_path} is not a valid predictor config: {' '.join(first[:3])}"
        ) from exc
    config.check_consistent(str(config_path))
    result = PredictorFolder(folder, config)
    weights = result.weights_path
    if not weights.is_file():
        raise PredictorError(f"predictor folder {folder} is corrupt: {weights.name} is missing")
    if sha256_file(weights) != config.weights.sha256:
        raise PredictorError(
            f"predictor folder {folder} is corrupt: {weights.name} does not match its checksum"
        )
    try:
        validate_model_folder(result.aux_path)
    except AmortizedError as exc:
        raise PredictorError(f"auxiliary model of predictor {folder}: {exc}") from exc
    aux_geometry = AttentionGeometry.from_folder(result.aux_path)
    if aux_geometry != config.aux.geometry:
        raise PredictorError(
            f"auxiliary model {result.aux_path} does not match {CONFIG_NAME}: "
            + ", ".join(aux_geometry.mismatches(config.aux.geometry))
        )
    return result


def check_served_geometry(
    predictor: PredictorFolder, served: AttentionGeometry, served_name: str
) -> None:
    """Raise, naming every differing field, if the predictor cannot fill this KV cache."""
    problems = predictor.config.base.geometry.mismatches(served)
    if problems:
        raise PredictorError(
            f"KV predictor {predictor.path} does not fit the served model {served_name}: "
            + ", ".join(f"{p} (predictor != served)" for p in problems)
        )


def check_fits_base(predictor: PredictorFolder, base_folder: str | os.PathLike[str]) -> list[str]:
    """Raise if the predictor cannot write into ``base_folder``'s KV cache; return warnings."""
    served = AttentionGeometry.from_folder(base_folder)
    check_served_geometry(predictor, served, str(Path(base_folder)))
    warnings = []
    if model_config_sha256(base_folder) != predictor.config.base.config_sha256:
        warnings.append(
            f"{Path(base_folder)}/config.json differs from the one KV predictor "
            f"{predictor.path} was trained with ({predictor.config.base.path}); shapes fit, "
            "but predictions are only good for the weights it was trained against"
        )
    return warnings
