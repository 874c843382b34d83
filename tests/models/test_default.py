import json

from amortized.models.default import DefaultModelRecipe, build_default_model, default_model_path
from amortized.models.folder import MANIFEST_NAME, validate_model_folder
from amortized.models.shape import ModelShape

SMALL = DefaultModelRecipe(
    shape=ModelShape(
        hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64
    ),
    vocab_size=400,
    dialogues=300,
    seq_len=64,
    batch_size=4,
    steps=40,
    learning_rate=1e-2,
    warmup_steps=2,
)


def _weights_digest(path) -> str:
    return str(
        json.loads((path / MANIFEST_NAME).read_text())["files"]["model.safetensors"]["sha256"]
    )


def test_recipe_builds_the_same_model_twice_and_learns(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    stats = build_default_model(a, SMALL, progress=False)
    build_default_model(b, SMALL, progress=False)
    assert _weights_digest(a) == _weights_digest(b)
    assert stats["final_loss"] < stats["first_loss"] - 1.0
    folder = validate_model_folder(a)
    assert folder.architectures == ("LlamaForCausalLM",)
    assert folder.manifest is not None
    assert folder.manifest["recipe"]["fingerprint"] == SMALL.fingerprint()


def test_cache_path_follows_env_and_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("AMORTIZED_CACHE_DIR", str(tmp_path))
    path = default_model_path()
    assert path.parent == tmp_path / "models"
    assert path.name.endswith(DefaultModelRecipe().fingerprint())
    assert default_model_path(recipe=SMALL) != path
    assert default_model_path(cache_dir=tmp_path / "x").parent == tmp_path / "x" / "models"
