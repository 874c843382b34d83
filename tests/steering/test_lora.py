"""A CASAL change exported as a LoRA adapter: exact when the rank allows, refused when it
cannot be one, and served by vLLM next to the base model, chosen per request by name."""

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import torch
from safetensors.torch import load_file

from amortized.models import ModelFolder
from amortized.serving.process import ServerProcess
from amortized.steering.export import export_checkpoint
from amortized.steering.lora import (
    ADAPTER_WEIGHTS,
    LoraExportError,
    choose_rank,
    factorise,
    relative_error,
    write_lora_adapter,
)
from tests.conftest import AMORTIZED, API_KEY, amortized_server

DOWN = "model.layers.1.mlp.down_proj.weight"
PROMPTS = ["The capital of France is", "Once upon a time", "def main():", "1, 2, 3,"]


def low_rank_change(shape: torch.Size, rank: int, scale: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    left = torch.randn(shape[0], rank, generator=generator)
    right = torch.randn(rank, shape[1], generator=generator)
    change: torch.Tensor = scale * left @ right / rank**0.5
    return change


@pytest.fixture(scope="module")
def casal_checkpoint(tiny_llama: ModelFolder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in CASAL checkpoint: layer 1's down_proj plus a rank-3 change, with the record
    CASAL writes (training itself is tested elsewhere; here only the change matters). Stored
    in the model's bf16, so the stored change is rank 3 plus rounding noise."""
    weights = load_file(str(tiny_llama.path / "model.safetensors"))
    changed = weights[DOWN].float() + low_rank_change(weights[DOWN].shape, 3, 0.5)
    out = tmp_path_factory.mktemp("casal") / "checkpoint"
    record = {"layer": 1, "tensors": [DOWN]}
    export_checkpoint(tiny_llama.path, out, {DOWN: changed}, record, cast=True)
    return out


def test_factorisation_is_exact_at_full_rank_and_truncates_optimally():
    delta = low_rank_change(torch.Size([48, 80]), 5, 1.0)
    a, b = factorise(delta, 5)
    assert a.shape == (5, 80)
    assert b.shape == (48, 5)
    torch.testing.assert_close(b @ a, delta, rtol=1e-4, atol=1e-5)
    assert relative_error(delta, 5) < 1e-6
    a2, b2 = factorise(delta, 2)
    residual = torch.linalg.norm(delta - b2 @ a2) / torch.linalg.norm(delta)
    assert abs(float(residual) - relative_error(delta, 2)) < 1e-4
    assert relative_error(delta, 2) > relative_error(delta, 4) > 0


def test_rank_is_the_smallest_vllm_accepts_within_tolerance():
    assert choose_rank([low_rank_change(torch.Size([64, 256]), 3, 1.0)], 0.05) == 8
    full = torch.randn(64, 256, generator=torch.Generator().manual_seed(1))
    assert choose_rank([full], 0.05) == 64  # no smaller rank is close: full rank, exact
    assert choose_rank([full], 0.9) < 64


def test_adapter_holds_the_change(tiny_llama: ModelFolder, casal_checkpoint: Path, tmp_path: Path):
    adapter = write_lora_adapter(tiny_llama.path, casal_checkpoint, tmp_path / "adapter")
    assert adapter.rank == 8
    assert adapter.target_modules == ("down_proj",)
    assert adapter.relative_error[DOWN] < 0.05
    tensors = load_file(str(adapter.path / ADAPTER_WEIGHTS))
    prefix = "base_model.model.model.layers.1.mlp.down_proj"
    delta = tensors[f"{prefix}.lora_B.weight"] @ tensors[f"{prefix}.lora_A.weight"]
    base = load_file(str(tiny_llama.path / "model.safetensors"))[DOWN]
    trained = load_file(str(casal_checkpoint / "model.safetensors"))[DOWN]
    error = torch.linalg.norm(base.float() + delta - trained.float())
    assert float(error / torch.linalg.norm(trained.float() - base.float())) < 0.05
    truncated = write_lora_adapter(tiny_llama.path, casal_checkpoint, tmp_path / "rank1", rank=1)
    assert truncated.relative_error[DOWN] > 0.1  # rank 1 of a rank-3 change loses part


def test_refusals(tiny_llama: ModelFolder, casal_checkpoint: Path, tmp_path: Path):
    with pytest.raises(LoraExportError, match="not a CASAL checkpoint"):
        write_lora_adapter(tiny_llama.path, tiny_llama.path, tmp_path / "a")
    with pytest.raises(LoraExportError, match="vLLM accepts"):
        write_lora_adapter(tiny_llama.path, casal_checkpoint, tmp_path / "b", rank=7)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(LoraExportError, match="--overwrite"):
        write_lora_adapter(tiny_llama.path, casal_checkpoint, tmp_path / "full")
    assert (tmp_path / "full" / "x").read_text() == "keep me"


@pytest.fixture(scope="module")
def lora_server(
    tiny_llama: ModelFolder, casal_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    adapter = write_lora_adapter(
        tiny_llama.path, casal_checkpoint, tmp_path_factory.mktemp("adapter") / "casal"
    )
    log = tmp_path_factory.mktemp("logs") / "lora-server.log"
    args = ["--served-model-name", "tiny", "--dtype", "float32", "--max-model-len", "256"]
    args += ["--enable-lora", "--max-lora-rank", str(adapter.rank)]
    args += ["--lora-modules", f"casal={adapter.path}"]
    with amortized_server(tiny_llama.path, log, *args) as server:
        yield server


def hf_next_token_logprobs(folder: Path, prompt: str) -> torch.Tensor:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1)


@pytest.mark.server
def test_one_server_serves_base_and_casal_by_model_name(
    lora_server: ServerProcess, tiny_llama: ModelFolder, casal_checkpoint: Path
):
    from transformers import AutoTokenizer

    client = openai.OpenAI(base_url=lora_server.base_url, api_key=API_KEY)
    assert {"tiny", "casal"} <= {m.id for m in client.models.list()}
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama.path))
    moved = 0.0
    for prompt in PROMPTS:
        want = {
            "tiny": hf_next_token_logprobs(tiny_llama.path, prompt),
            "casal": hf_next_token_logprobs(casal_checkpoint, prompt),
        }
        for name, logprobs in want.items():
            reply = client.completions.create(
                model=name, prompt=prompt, max_tokens=1, temperature=0, logprobs=1
            )
            content = reply.choices[0].logprobs
            assert content is not None
            assert content.token_logprobs is not None
            assert content.tokens is not None
            token = tokenizer.convert_tokens_to_ids(content.tokens[0])
            if isinstance(token, int) and token != tokenizer.unk_token_id:
                assert int(logprobs.argmax()) == token, (name, prompt)
            assert abs(float(logprobs.max()) - content.token_logprobs[0]) < 2e-2, (name, prompt)
        moved = max(moved, float((want["casal"] - want["tiny"]).abs().max()))
    assert moved > 0.1  # the change is large enough that serving the base would fail above


def test_cli_writes_the_adapter_and_refuses_in_one_line(
    tiny_llama: ModelFolder, casal_checkpoint: Path, tmp_path: Path
):
    command = [*AMORTIZED, "steer", "lora", "--base", str(tiny_llama.path)]
    done = subprocess.run(
        [*command, "--casal", str(casal_checkpoint), "--out", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["rank"] == 8
    assert summary["layer"] == 1
    assert "--enable-lora --max-lora-rank 8" in done.stderr
    assert (tmp_path / "a" / ADAPTER_WEIGHTS).is_file()
    refused = subprocess.run(
        [*command, "--casal", str(tiny_llama.path), "--out", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "not a CASAL checkpoint" in lines[0]
    assert not (tmp_path / "b").exists()
