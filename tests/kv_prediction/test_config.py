"""Predictor folders: schema, checksums, and fitting the served model."""

import json
import shutil
from pathlib import Path

import pytest

from amortized.kv_prediction import (
    AttentionGeometry,
    PredictorError,
    PredictorFolder,
    check_fits_base,
    load_predictor_folder,
)
from amortized.kv_prediction.config import CONFIG_NAME, WEIGHTS_NAME, default_layer_map
from amortized.models import ModelFolder


def copy_of(folder: PredictorFolder, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(folder.path, target)
    return target


def test_geometry_reads_gqa(tiny_llama: ModelFolder):
    geometry = AttentionGeometry.from_folder(tiny_llama.path)
    assert (geometry.num_layers, geometry.num_kv_heads, geometry.head_dim) == (2, 2, 32)
    assert geometry.kv_dim == 64


def test_geometry_rejects_other_families():
    config = {"model_type": "gpt2", "num_attention_heads": 2, "hidden_size": 8}
    with pytest.raises(PredictorError, match="'gpt2'"):
        AttentionGeometry.from_hf_config(config, "m")


def test_default_layer_map_spreads_evenly():
    assert default_layer_map(8, 2) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert default_layer_map(4, 4) == [0, 1, 2, 3]


def test_fits_its_base_and_names_mismatches(
    identity_predictor: PredictorFolder, tiny_qwen2: ModelFolder, tiny_llama: ModelFolder
):
    assert check_fits_base(identity_predictor, tiny_llama.path) == []
    with pytest.raises(PredictorError, match="model_type llama != qwen2"):
        check_fits_base(identity_predictor, tiny_qwen2.path)


def test_corrupt_weights_are_caught(identity_predictor: PredictorFolder, tmp_path: Path):
    folder = copy_of(identity_predictor, tmp_path)
    data = bytearray((folder / WEIGHTS_NAME).read_bytes())
    data[-1] ^= 0xFF
    (folder / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(PredictorError, match="does not match its checksum"):
        load_predictor_folder(folder)


def test_missing_aux_is_caught(identity_predictor: PredictorFolder, tmp_path: Path):
    folder = copy_of(identity_predictor, tmp_path)
    shutil.rmtree(folder / "aux")
    with pytest.raises(PredictorError, match="auxiliary model"):
        load_predictor_folder(folder)


def test_inconsistent_layer_map_is_caught(identity_predictor: PredictorFolder, tmp_path: Path):
    folder = copy_of(identity_predictor, tmp_path)
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["layer_map"] = [0, 5]
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(PredictorError, match=r"auxiliary layers \[5\]"):
        load_predictor_folder(folder)


def test_not_a_predictor_folder(tmp_path: Path):
    with pytest.raises(PredictorError, match="amortized kvp train"):
        load_predictor_folder(tmp_path)
    (tmp_path / CONFIG_NAME).write_text("{not json")
    with pytest.raises(PredictorError, match="not a valid predictor config"):
        load_predictor_folder(tmp_path)
