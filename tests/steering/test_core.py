"""Capture, steering vectors, the steering hook, CASAL training and checkpoint export on the
tiny random Llama, Qwen2, Qwen3, Mistral, Gemma, Gemma 2 and Gemma 3 models (float32 where
exactness is asserted, bfloat16 where the GPU path's precision is)."""

import copy
import json
import math
import subprocess
import sys
import textwrap
import types

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from amortized.errors import AmortizedError
from amortized.models import ModelFolder, validate_model_folder
from amortized.models.folder import MANIFEST_NAME, sha256_file
from amortized.steering.capture import (
    SUPPORTED_MODEL_TYPES,
    MLPBlock,
    UnsupportedModelError,
    capture,
    capture_last_token,
    capture_mlp_inputs,
    check_layer,
    decoder_layers,
    encode_texts,
    mlp_block,
    mlp_parts,
)
from amortized.steering.casal import (
    CasalConfig,
    apply_casal,
    casal_targets,
    standalone_block,
    train_casal,
)
from amortized.steering.export import (
    CONFIG_KEY,
    ExportError,
    casal_provenance,
    export_checkpoint,
)
from amortized.steering.labelling import Label, LabelledItem
from amortized.steering.placement import load_model, resolve_device, resolve_dtype, stored_dtype
from amortized.steering.qa import question_prompt
from amortized.steering.sft import SFTConfig, sft_batch, train_sft
from amortized.steering.steer import generate_answers, steering
from amortized.steering.vectors import (
    SteeringVector,
    export_control_vector_gguf,
    steering_vector,
)
from tests.steering.conftest import NEW_FAMILIES

QUESTIONS = [
    "What is the capital of France?",
    "Who wrote Hamlet?",
    "How many legs does a spider have?",
    "In which year did the first person walk on the moon, and who was it?",
    "What is 2 + 2?",
    "Name the largest planet in the solar system.",
    "Which element has the chemical symbol O?",
    "What is the boiling point of water at sea level in degrees Celsius?",
    "Who painted the Mona Lisa?",
    "Why?",
    "What language is spoken in Brazil?",
    "What is the square root of eighty-one, written as a number?",
    "Which ocean is the largest?",
    "Who discovered penicillin?",
    "What is the tallest mountain on Earth?",
    "How many continents are there?",
]
DOWN = "model.layers.1.mlp.down_proj.weight"


def _load(folder: ModelFolder, dtype: torch.dtype | None = torch.float32):
    kwargs = {"dtype": dtype} if dtype is not None else {}
    model = AutoModelForCausalLM.from_pretrained(folder.path, **kwargs)
    model.eval()
    return model, AutoTokenizer.from_pretrained(folder.path)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; with two on a busy 2-core machine, every op
    waits on a spinning peer (seen: 4 ms -> 240 ms a forward)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def llama(tiny_llama):
    return _load(tiny_llama)


@pytest.fixture(scope="module")
def qwen2(tiny_qwen2):
    return _load(tiny_qwen2)


@pytest.fixture(scope="module")
def families(tiny_families):
    """Each new family's tiny model, loaded in float32 on the CPU."""
    return {
        name: load_model(path, device="cpu", dtype="float32")
        for name, path in tiny_families.items()
    }


FAMILIES = ("llama", "qwen2", *NEW_FAMILIES)
SANDWICH_FAMILIES = ("gemma2", "gemma3_text")


def _family(request, family: str):
    """``(model, tokenizer)`` of ``family``, float32, shared by the module (copy to edit)."""
    if family in ("llama", "qwen2"):
        return request.getfixturevalue(family)
    return request.getfixturevalue("families")[family]


@pytest.fixture(params=FAMILIES)
def any_model(request):
    return _family(request, request.param)


def _labels(n: int, seed: int = 0) -> list[bool]:
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=generator) < 0.5).tolist()
    labels[0], labels[1] = True, False  # both classes present
    return labels


# --- capture ---------------------------------------------------------------------------


def test_decoder_layers_and_unsupported_models(llama, qwen2, families):
    assert set(SUPPORTED_MODEL_TYPES) == set(FAMILIES)
    for model, _ in (llama, qwen2, *families.values()):
        assert model.config.model_type in SUPPORTED_MODEL_TYPES
        assert len(decoder_layers(model)) == 2
    assert decoder_layers(llama[0].model) is decoder_layers(llama[0])
    # gemma3 is the multimodal Gemma 3 (its text layers sit elsewhere): refused, not guessed.
    for model_type in ("gpt2", "gemma3", None):
        other = nn.Linear(2, 2)
        other.config = types.SimpleNamespace(model_type=model_type)  # type: ignore[assignment]
        with pytest.raises(UnsupportedModelError, match=repr(model_type)) as info:
            decoder_layers(other)
        assert isinstance(info.value, AmortizedError)
        message = str(info.value)
        assert "\n" not in message
        assert all(name in message for name in SUPPORTED_MODEL_TYPES)
    # A supported model_type whose layer lacks the modules its layout names.
    impostor = copy.deepcopy(llama[0])
    impostor.config.model_type = "gemma2"
    with pytest.raises(UnsupportedModelError, match="pre_feedforward_layernorm"):
        mlp_parts(impostor, 1)
    with pytest.raises(IndexError, match=r"0\.\.1"):
        capture_last_token(llama[0], llama[1], QUESTIONS[:2], [2])


def test_capture_is_padding_independent_and_reads_layer_outputs(any_model):
    model, tokenizer = any_model
    lengths = {
        len(ids)
        for ids in encode_texts(tokenizer, [question_prompt(tokenizer, q) for q in QUESTIONS])
    }
    assert len(lengths) > 3  # the batch really is padded
    batched = capture_last_token(model, tokenizer, QUESTIONS, [0, 1], batch_size=5)
    single = capture_last_token(model, tokenizer, QUESTIONS, [1, 0], batch_size=1)
    for layer in (0, 1):
        assert batched[layer].shape == (len(QUESTIONS), model.config.hidden_size)
        assert batched[layer].dtype == torch.float32
        torch.testing.assert_close(batched[layer], single[layer], atol=1e-5, rtol=1e-5)
    # Layer i's output is transformers' hidden_states[i + 1] (below the last layer).
    ids = tokenizer(question_prompt(tokenizer, QUESTIONS[3]), return_tensors="pt")
    with torch.no_grad():
        states = model(**ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(batched[0][3], states[1][0, -1], atol=1e-5, rtol=1e-5)


def test_capture_at_explicit_positions(llama):
    model, tokenizer = llama
    texts = [question_prompt(tokenizer, q) for q in QUESTIONS[:6]]
    got = capture(model, tokenizer, texts, [1], positions=[0, 2, -1], batch_size=4)[1]
    assert got.shape == (6, 3, model.config.hidden_size)
    last = capture(model, tokenizer, texts, [1])[1]
    torch.testing.assert_close(got[:, 2], last, atol=1e-5, rtol=1e-5)
    first = capture(model, tokenizer, texts[:1], [1], positions=[0])[1]
    torch.testing.assert_close(got[:1, 0], first[:, 0], atol=1e-5, rtol=1e-5)
    with pytest.raises(IndexError, match="outside"):
        capture(model, tokenizer, texts, [1], positions=[500])


def test_mlp_inputs_reproduce_the_layer_output(any_model):
    """The equivalence CASAL trains on: out == r + post(mlp(pre(r))) with the family's norms
    (``post_attention_layernorm`` alone before the MLP, or Gemma 2/3's sandwich)."""
    model, tokenizer = any_model
    resid_mid, layer_out = capture_mlp_inputs(model, tokenizer, QUESTIONS, 1, batch_size=6)
    assert resid_mid.shape == layer_out.shape == (len(QUESTIONS), model.config.hidden_size)
    with torch.no_grad():
        recomputed = mlp_block(model, 1)(resid_mid)
    torch.testing.assert_close(recomputed, layer_out, atol=1e-5, rtol=1e-5)
    outputs = capture_last_token(model, tokenizer, QUESTIONS, [1])[1]
    torch.testing.assert_close(layer_out, outputs, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(resid_mid, layer_out)


@pytest.mark.parametrize("family", SANDWICH_FAMILIES)
def test_sandwich_norms_wrap_the_mlp(request, family):
    """Gemma 2/3's ``post_attention_layernorm`` normalises the attention output: read as the
    MLP's norm (the Llama layout) it misses the layer, the sandwich layout hits it."""
    model, tokenizer = _family(request, family)
    block = check_layer(model, 1)
    parts = mlp_parts(model, 1)
    assert parts.pre_norm is block.pre_feedforward_layernorm
    assert parts.post_norm is block.post_feedforward_layernorm
    resid_mid, layer_out = capture_mlp_inputs(model, tokenizer, QUESTIONS, 1)
    attention_norm = block.get_submodule("post_attention_layernorm")
    llama_layout = MLPBlock(attention_norm, parts.mlp, None)
    no_post_norm = MLPBlock(parts.pre_norm, parts.mlp, None)
    with torch.no_grad():
        for wrong in (llama_layout, no_post_norm):
            assert not torch.allclose(wrong(resid_mid), layer_out, atol=1e-3)
        torch.testing.assert_close(mlp_block(model, 1)(resid_mid), layer_out)


# --- vectors ---------------------------------------------------------------------------


def test_steering_vector_finds_a_planted_direction(tmp_path):
    generator = torch.Generator().manual_seed(3)
    hidden = 64
    u = torch.randn(hidden, generator=generator)
    u /= u.norm()
    known = torch.randn(300, hidden, generator=generator)
    unknown = torch.randn(200, hidden, generator=generator) + 3 * u
    vector = steering_vector(known, unknown, layer=5)
    assert torch.nn.functional.cosine_similarity(vector.direction, u, dim=0) > 0.95
    assert (vector.known_count, vector.unknown_count) == (300, 200)
    torch.testing.assert_close(vector.known, -vector.direction)
    torch.testing.assert_close(vector.direction, vector.unknown_mean - vector.known_mean)

    loaded = SteeringVector.load(vector.save(tmp_path / "v.safetensors"))
    assert (loaded.layer, loaded.known_count, loaded.unknown_count) == (5, 300, 200)
    for name in ("direction", "known_mean", "unknown_mean"):
        assert torch.equal(getattr(loaded, name), getattr(vector, name))

    with pytest.raises(ValueError, match="no known questions"):
        steering_vector(known[:0], unknown, layer=5)
    with pytest.raises(ValueError, match="no unknown questions"):
        steering_vector(known, unknown[:0], layer=5)
    with pytest.raises(ValueError, match="hidden sizes"):
        steering_vector(known, unknown[:, :10], layer=5)


def test_control_vector_gguf_round_trip(tmp_path):
    from gguf import GGUFReader

    a, b = torch.randn(32), torch.randn(32)
    path = export_control_vector_gguf(
        {3: b, 1: a}, tmp_path / "cv.gguf", alpha=2.0, model_hint="llama"
    )
    reader = GGUFReader(path)
    assert reader.fields["general.architecture"].contents() == "controlvector"
    assert reader.fields["controlvector.model_hint"].contents() == "llama"
    assert reader.fields["controlvector.layer_count"].contents() == 2
    tensors = {t.name: torch.from_numpy(t.data.copy()) for t in reader.tensors}
    assert set(tensors) == {"direction.1", "direction.3"}
    for name, vector in (("direction.1", a), ("direction.3", b)):
        assert tensors[name].dtype == torch.float32
        torch.testing.assert_close(tensors[name], 2.0 * vector)
    with pytest.raises(ValueError, match="layer 0"):
        export_control_vector_gguf({0: a}, tmp_path / "zero.gguf")
    with pytest.raises(ValueError, match="values"):
        export_control_vector_gguf({1: a, 2: torch.randn(8)}, tmp_path / "bad.gguf")


# --- steering and generation -----------------------------------------------------------


def test_steering_hook_adds_the_vector_and_is_removed(any_model):
    model, tokenizer = any_model
    hidden = model.config.hidden_size
    vector = torch.randn(hidden, generator=torch.Generator().manual_seed(1))
    ids = tokenizer(question_prompt(tokenizer, QUESTIONS[0]), return_tensors="pt")
    block = decoder_layers(model)[0]
    hooks = dict(block._forward_hooks)
    with torch.no_grad():
        base = model(**ids).logits
        with steering(model, 0, vector, 4.0):
            steered = model(**ids).logits
            shifted = capture_last_token(model, tokenizer, QUESTIONS[:3], [0])[0]
        after = model(**ids).logits
    assert not torch.allclose(base, steered, atol=1e-3)
    assert torch.equal(base, after)
    assert block._forward_hooks == hooks
    plain = capture_last_token(model, tokenizer, QUESTIONS[:3], [0])[0]
    torch.testing.assert_close(shifted, plain + 4.0 * vector, atol=1e-5, rtol=1e-5)

    with pytest.raises(RuntimeError, match="boom"), steering(model, 0, vector, 1.0):
        raise RuntimeError("boom")
    assert block._forward_hooks == hooks
    with pytest.raises(ValueError, match="shape"), steering(model, 0, vector[:5], 1.0):
        pass


def test_generate_answers_batched_equals_unbatched(llama):
    model, tokenizer = llama
    batched = generate_answers(model, tokenizer, QUESTIONS[:6], max_new_tokens=6, batch_size=4)
    single = generate_answers(model, tokenizer, QUESTIONS[:6], max_new_tokens=6, batch_size=1)
    assert batched == single
    assert len(batched) == 6
    assert all(isinstance(a, str) for a in batched)
    assert generate_answers(model, tokenizer, []) == []
    vector = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(2))
    with steering(model, 1, vector, 50.0):
        steered = generate_answers(model, tokenizer, QUESTIONS[:6], max_new_tokens=6)
    assert steered != batched


# --- CASAL -----------------------------------------------------------------------------


def _casal_inputs(model, tokenizer, layer: int = 1):
    resid_mid, layer_out = capture_mlp_inputs(model, tokenizer, QUESTIONS, layer)
    labels = _labels(len(QUESTIONS))
    known = torch.tensor(labels)
    vector = steering_vector(layer_out[known], layer_out[~known], layer)
    return resid_mid, layer_out, labels, vector


def test_casal_targets_push_each_type_its_way(llama):
    resid_mid, layer_out, labels, vector = _casal_inputs(*llama)
    targets = casal_targets(resid_mid, layer_out, labels, vector, alpha=4.0)
    for row, known in enumerate(labels):
        expected = layer_out[row] + 4.0 * (vector.known if known else vector.unknown)
        torch.testing.assert_close(targets[row], expected)
    with pytest.raises(ValueError, match="labels"):
        casal_targets(resid_mid, layer_out, labels[:-1], vector, alpha=4.0)


@pytest.mark.parametrize(
    ("family", "submodule", "trained"),
    [
        ("llama", "down_proj", {DOWN}),
        ("llama", "up_proj", {"model.layers.1.mlp.up_proj.weight"}),
        ("qwen2", "both", {DOWN, "model.layers.1.mlp.up_proj.weight"}),
    ],
)
def test_casal_trains_only_the_chosen_projection(request, family, submodule, trained):
    base, tokenizer = request.getfixturevalue(family)
    model = copy.deepcopy(base)
    resid_mid, layer_out, labels, vector = _casal_inputs(model, tokenizer)
    targets = casal_targets(resid_mid, layer_out, labels, vector, alpha=4.0)
    config = CasalConfig(layer=1, submodule=submodule, lr=3e-3, epochs=5, batch_size=4, seed=7)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_casal(model, 1, resid_mid, targets, config)

    assert set(result.state) == trained
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched
    assert len(result.losses) == 5
    assert result.examples == len(QUESTIONS)
    assert result.losses[-1] < result.losses[0]
    assert result.final_loss < 0.8 * result.initial_loss
    assert all(result.state[k].dtype == before[k].dtype for k in trained)
    assert result.provenance(vector)["vector_norm"] == pytest.approx(vector.norm)

    apply_casal(model, result)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == trained
    # Training on cached residuals == training the layer in place: the model's own layer
    # output now sits exactly where the standalone network's did.
    new_out = capture_last_token(model, tokenizer, QUESTIONS, [1])[1]
    in_model = torch.nn.functional.mse_loss(new_out, targets).item()
    assert in_model == pytest.approx(result.final_loss, rel=1e-4)

    again = train_casal(copy.deepcopy(base), 1, resid_mid, targets, config)
    assert all(torch.equal(again.state[k], result.state[k]) for k in trained)  # seeded
    with pytest.raises(ValueError, match=r"config\.layer"):
        train_casal(model, 0, resid_mid, targets, config)


@pytest.mark.parametrize("family", FAMILIES)
def test_casal_on_each_family(request, family):
    """Capture, a steering vector and CASAL on each family's real layer, and the equivalence
    CASAL relies on: with the trained weights written into a copy of the model, the model's
    own layer output is the trained standalone block's prediction on the cached inputs."""
    base, tokenizer = _family(request, family)
    acts = capture_last_token(base, tokenizer, QUESTIONS, [0, 1], batch_size=5)
    assert acts[0].shape == acts[1].shape == (len(QUESTIONS), base.config.hidden_size)
    resid_mid, layer_out, labels, vector = _casal_inputs(base, tokenizer)
    torch.testing.assert_close(layer_out, acts[1], atol=1e-5, rtol=1e-5)
    assert vector.norm > 0
    targets = casal_targets(resid_mid, layer_out, labels, vector, alpha=4.0)
    config = CasalConfig(layer=1, lr=1e-2, epochs=20, batch_size=4)
    result = train_casal(base, 1, resid_mid, targets, config)
    assert result.losses[-1] < result.losses[0]
    assert result.final_loss < 0.8 * result.initial_loss
    assert set(result.state) == {DOWN}

    model = copy.deepcopy(base)
    apply_casal(model, result)
    new_out = capture_last_token(model, tokenizer, QUESTIONS, [1])[1]
    with torch.no_grad():
        predicted = standalone_block(model, 1)(resid_mid)
    torch.testing.assert_close(new_out, predicted, atol=1e-5, rtol=1e-5)
    in_model = torch.nn.functional.mse_loss(new_out, targets).item()
    assert in_model == pytest.approx(result.final_loss, rel=1e-4)
    assert not torch.allclose(new_out, layer_out, atol=1e-3)  # the layer really moved


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_casal_on_a_bfloat16_model(family, tiny_llama, tiny_families):
    """The accelerator path's precision, on the CPU: a bfloat16 model placed explicitly.
    Captures are float32 (exact bf16 values), training runs on a float32 copy, and the
    weights go back in bfloat16; the equivalence then holds to bf16 rounding."""
    path = tiny_llama.path if family == "llama" else tiny_families[family]
    base, tokenizer = load_model(path, device="cpu", dtype=torch.bfloat16)
    assert base.dtype == torch.bfloat16
    assert base.device.type == "cpu"
    resid_mid, layer_out, labels, vector = _casal_inputs(base, tokenizer)
    assert resid_mid.dtype == layer_out.dtype == torch.float32
    assert torch.equal(resid_mid, resid_mid.bfloat16().float())  # bf16 values, kept exactly
    targets = casal_targets(resid_mid, layer_out, labels, vector, alpha=4.0)
    config = CasalConfig(layer=1, lr=1e-2, epochs=20, batch_size=4)
    result = train_casal(base, 1, resid_mid, targets, config)
    assert result.final_loss < 0.8 * result.initial_loss
    assert result.state[DOWN].dtype == torch.bfloat16
    assert result.state[DOWN].device.type == "cpu"

    model = copy.deepcopy(base)
    apply_casal(model, result)
    new_out = capture_last_token(model, tokenizer, QUESTIONS, [1])[1]
    with torch.no_grad():
        same_precision = standalone_block(model, 1, dtype=torch.bfloat16)(resid_mid.bfloat16())
        trained = standalone_block(model, 1)(resid_mid)
    # Same modules in the same dtype: equal (seen bit for bit; kernels may round apart).
    scale = layer_out.abs().max().item()
    torch.testing.assert_close(new_out, same_precision.float(), atol=1e-2 * scale, rtol=2e-2)
    # Against training's float32 block: bf16 rounding only (seen: 0.6% of the largest value).
    assert (new_out - trained).abs().max().item() < 0.02 * scale
    in_model = torch.nn.functional.mse_loss(new_out, targets).item()
    assert in_model == pytest.approx(result.final_loss, rel=0.02)
    assert in_model < 0.8 * result.initial_loss


# --- device and dtype ------------------------------------------------------------------


def test_device_and_dtype_choices(tiny_llama):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "cuda:x", "CPU", "", "cuda:99"):
        with pytest.raises(AmortizedError, match="--device") as info:
            resolve_device(bad)
        assert "\n" not in str(info.value)
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_dtype("auto", cpu, torch.bfloat16) == torch.float32
    assert resolve_dtype("auto", gpu, torch.bfloat16) == torch.bfloat16
    assert resolve_dtype("auto", gpu) == torch.float32
    assert resolve_dtype("float16", cpu) == torch.float16
    assert resolve_dtype(torch.bfloat16, cpu) == torch.bfloat16
    for wrong in ("int8", torch.int8, "fp32"):
        with pytest.raises(AmortizedError, match=r"--dtype .*float32, bfloat16, float16"):
            resolve_dtype(wrong, cpu)

    from transformers import AutoConfig

    assert stored_dtype(AutoConfig.from_pretrained(tiny_llama.path)) == torch.bfloat16
    assert stored_dtype(types.SimpleNamespace(dtype="int8")) is None
    model, _ = load_model(tiny_llama.path, device="cpu")  # auto: float32 on the CPU
    assert model.dtype == torch.float32
    assert model.device.type == "cpu"
    assert not model.training


# --- SFT -------------------------------------------------------------------------------


def test_sft_batch_masks_prompts_and_padding():
    ids, mask, labels = sft_batch([([5, 6, 7, 8], 2), ([9, 10], 1)], pad=0, device="cpu")
    assert ids.tolist() == [[5, 6, 7, 8], [9, 10, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert labels.tolist() == [[-100, -100, 7, 8], [-100, 10, -100, -100]]


def test_sft_trains_a_bfloat16_model_where_it_is(tiny_llama):
    model, tokenizer = load_model(tiny_llama.path, device="cpu", dtype="bfloat16")
    items = [
        LabelledItem(
            id=str(i),
            question=question,
            answers=("Paris",),
            label=Label.KNOWN if i % 2 else Label.UNKNOWN,
            correct=10 * (i % 2),
            wrong=10 * (1 - i % 2),
            abstained=0,
            samples=(),
        )
        for i, question in enumerate(QUESTIONS[:4])
    ]
    before = model.get_parameter(DOWN).detach().clone()
    result = train_sft(model, tokenizer, items, SFTConfig(epochs=1, batch_size=2))
    assert result.examples == 4
    assert len(result.losses) == 2
    assert all(math.isfinite(loss) for loss in result.losses)
    after = model.get_parameter(DOWN)
    assert after.dtype == torch.bfloat16
    assert not torch.equal(after, before)
    assert not model.training


# --- export ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tiny_llama, tmp_path_factory):
    """CASAL on the tiny Llama in its stored dtype (bfloat16), exported."""
    model, tokenizer = _load(tiny_llama, dtype=None)
    assert model.dtype == torch.bfloat16
    resid_mid, layer_out, labels, vector = _casal_inputs(model, tokenizer)
    targets = casal_targets(resid_mid, layer_out, labels, vector, alpha=4.0)
    result = train_casal(model, 1, resid_mid, targets, CasalConfig(layer=1, lr=1e-2, batch_size=4))
    out = tmp_path_factory.mktemp("casal") / "tiny-casal"
    export_checkpoint(tiny_llama.path, out, result.state, result.provenance(vector))
    return out, result, vector


def test_export_changes_only_the_trained_tensor(tiny_llama, exported):
    out, result, vector = exported
    src = tiny_llama.path
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in src.iterdir())
    rewritten = {"model.safetensors", "config.json", MANIFEST_NAME}
    for path in src.iterdir():
        if path.name not in rewritten:
            assert (out / path.name).read_bytes() == path.read_bytes(), path.name

    old, new = load_file(src / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(old) == set(new)
    for name in old:
        assert new[name].dtype == old[name].dtype
        if name == DOWN:
            assert torch.equal(new[name], result.state[DOWN])
            assert not torch.equal(new[name], old[name])
        else:
            assert torch.equal(new[name], old[name]), name
    # Patched in place: header and size are the original's.
    size = int.from_bytes((src / "model.safetensors").read_bytes()[:8], "little")
    assert (out / "model.safetensors").read_bytes()[: 8 + size] == (
        src / "model.safetensors"
    ).read_bytes()[: 8 + size]

    config_old = json.loads((src / "config.json").read_text())
    config_new = json.loads((out / "config.json").read_text())
    record = config_new.pop(CONFIG_KEY)
    assert config_new == config_old
    assert record["layer"] == 1
    assert record["alpha"] == 4.0
    assert record["submodule"] == "down_proj"
    assert record["vector_norm"] == pytest.approx(vector.norm)
    assert record["source_model"] == str(src.resolve())
    assert record["source_shards_sha256"] == {
        "model.safetensors": sha256_file(src / "model.safetensors")
    }
    assert record["replaced_tensors"] == [DOWN]
    assert record["created"]
    assert record["amortized_version"]
    assert casal_provenance(out) == record
    assert casal_provenance(src) is None
    validate_model_folder(out)  # the rewritten manifest matches

    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(reloaded.get_parameter(DOWN), result.state[DOWN])


def test_export_refusals(tiny_llama, exported, tmp_path):
    out, result, _ = exported
    src = tiny_llama.path
    with pytest.raises(ExportError, match="not empty") as info:
        export_checkpoint(src, out, result.state, {})
    assert isinstance(info.value, AmortizedError)
    with pytest.raises(ExportError, match="no tensor"):
        export_checkpoint(
            src, tmp_path / "a", {"model.layers.9.mlp.down_proj.weight": result.state[DOWN]}, {}
        )
    with pytest.raises(ExportError, match="shape"):
        export_checkpoint(src, tmp_path / "b", {DOWN: result.state[DOWN][:, :3]}, {})
    as_float = {DOWN: result.state[DOWN].float()}
    with pytest.raises(ExportError, match="dtype"):
        export_checkpoint(src, tmp_path / "c", as_float, {})
    with pytest.raises(ExportError, match="source folder"):
        export_checkpoint(src, src, result.state, {})
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # nothing left behind
    assert not (tmp_path / "c").exists()

    export_checkpoint(src, tmp_path / "c", as_float, {"note": "cast"}, cast=True)
    assert torch.equal(load_file(tmp_path / "c" / "model.safetensors")[DOWN], result.state[DOWN])
    export_checkpoint(src, tmp_path / "c", result.state, {"note": "again"}, overwrite=True)
    assert (casal_provenance(tmp_path / "c") or {})["note"] == "again"


def test_export_sharded_checkpoint(tiny_llama, tmp_path):
    src = tmp_path / "sharded"
    src.mkdir()
    for path in tiny_llama.path.iterdir():
        if path.name not in ("model.safetensors", MANIFEST_NAME):
            (src / path.name).write_bytes(path.read_bytes())
    weights = load_file(tiny_llama.path / "model.safetensors")
    names = sorted(weights)
    shards = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: weights[k] for k in keys}, src / shard, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, shard))
    (src / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )

    replacement = torch.randn_like(weights[DOWN], dtype=torch.float32).to(weights[DOWN].dtype)
    out = export_checkpoint(src, tmp_path / "out", {DOWN: replacement}, {"layer": 1})
    target = weight_map[DOWN]
    other = next(s for s in shards if s != target)
    assert (out / other).read_bytes() == (src / other).read_bytes()
    assert (out / "model.safetensors.index.json").read_bytes() == (
        src / "model.safetensors.index.json"
    ).read_bytes()
    new = load_file(out / target)
    for name in shards[target]:
        expected = replacement if name == DOWN else weights[name]
        assert torch.equal(new[name], expected), name
    record = casal_provenance(out) or {}
    assert record["source_shards_sha256"] == {target: sha256_file(src / target)}
    assert not (out / MANIFEST_NAME).exists()
    assert torch.equal(AutoModelForCausalLM.from_pretrained(out).get_parameter(DOWN), replacement)


VLLM_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from vllm import LLM, SamplingParams

    if __name__ == "__main__":
        llm = LLM(model=sys.argv[1], enforce_eager=True, max_model_len=256,
                  kv_cache_memory_bytes=64 * 2**20, block_size=32)
        out = llm.generate(["What is the capital of France?"],
                           SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True))
        print("RESULT", json.dumps({"tokens": list(out[0].outputs[0].token_ids)}))
    """
)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_vllm_loads_the_exported_checkpoint(exported, tmp_path):
    out, _, _ = exported
    script = tmp_path / "load.py"
    script.write_text(VLLM_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-2000:] + done.stderr[-2000:]
    assert len(json.loads(lines[-1].removeprefix("RESULT "))["tokens"]) == 4


def test_the_sweep_falls_back_to_known_accuracy_plus_abstention():
    from amortized.steering.evaluation import SteeringMetrics
    from amortized.steering.pipeline import SweepResult, SweepRow

    def metrics(hallucination: float, known_accuracy: float) -> SteeringMetrics:
        return SteeringMetrics(
            hallucination=hallucination,
            refusal_on_known=0.0,
            known_accuracy=known_accuracy,
            overall_accuracy=0.0,
            unknown_abstention=1 - hallucination,
            known=25,
            unknown=25,
        )

    rows = [
        SweepRow(3, 1.0, metrics(0.0, 0.44)),  # lowest hallucination, ruins known answers
        SweepRow(5, 1.0, metrics(0.0, 0.68)),
        SweepRow(4, 1.0, metrics(0.04, 0.52)),
    ]
    none_kept = SweepResult(metrics(1.0, 1.0), rows, best=None)
    assert none_kept.fallback == rows[1]
    assert none_kept.choice == rows[1]
    kept = SweepResult(metrics(1.0, 1.0), rows, best=rows[2])
    assert kept.choice == rows[2]
    assert SweepResult(metrics(1.0, 1.0), [], best=None).choice is None
