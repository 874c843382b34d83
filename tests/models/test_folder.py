import json

import pytest

from amortized.errors import ModelError
from amortized.models import build_tiny_model, validate_model_folder
from amortized.models.folder import MANIFEST_NAME, ensure_folder


def test_missing_and_non_model_paths_are_explained(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        validate_model_folder(tmp_path / "nope")
    with pytest.raises(ModelError, match=r"no config\.json"):
        validate_model_folder(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        validate_model_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ModelError, match="no weights"):
        validate_model_folder(tmp_path)


def test_damaged_weights_are_detected(tmp_path):
    folder = build_tiny_model(tmp_path / "m")
    weights = folder.path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"corrupt: model\.safetensors"):
        validate_model_folder(folder.path)


def test_ensure_folder_rebuilds_a_corrupt_folder_and_keeps_a_good_one(tmp_path):
    target = tmp_path / "m"
    builds: list[str] = []

    def build(staging):
        builds.append(str(staging))
        built = build_tiny_model(staging / "inner")
        for file in built.path.iterdir():
            file.rename(staging / file.name)
        (staging / "inner").rmdir()
        manifest = json.loads((staging / MANIFEST_NAME).read_text())
        assert manifest["files"]

    notes: list[str] = []
    ensure_folder(target, build, notes.append)
    ensure_folder(target, build, notes.append)
    assert len(builds) == 1
    assert notes == []
    (target / "tokenizer.json").unlink()
    rebuilt = ensure_folder(target, build, notes.append)
    assert len(builds) == 2
    assert "tokenizer" in notes[0]
    assert "rebuilding" in notes[0]
    assert (rebuilt.path / "tokenizer.json").is_file()


def test_failed_build_leaves_no_folder(tmp_path):
    def broken(staging):
        (staging / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        ensure_folder(tmp_path / "m", broken)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_cache_location_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ModelError, match="AMORTIZED_CACHE_DIR"):
        ensure_folder(blocker / "models" / "m", lambda staging: None)
