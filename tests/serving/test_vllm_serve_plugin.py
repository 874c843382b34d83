"""Plain ``vllm serve <SmolLM2 folder>`` with ``VLLM_PLUGINS=amortized`` (no launcher).

This is the path users take when they keep their own vLLM command line: the fetched folder
is an ordinary Hugging Face model, and the routes come from the entry point alone.
"""

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from amortized.models import ModelFolder
from amortized.serving.process import ServerProcess, free_port

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def plain_vllm_server(
    smollm2: ModelFolder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    vllm = shutil.which("vllm", path=str(Path(sys.executable).parent)) or "vllm"
    port = free_port()
    argv = [
        vllm,
        "serve",
        str(smollm2.path),
        "--port",
        str(port),
        "--enforce-eager",
        "--dtype",
        "float32",
        "--max-model-len",
        "2048",
        "--kv-cache-memory-bytes",
        "512M",
        "--served-model-name",
        "plain",
    ]
    log = tmp_path_factory.mktemp("logs") / "plain-vllm.log"
    with ServerProcess(argv, port, log, env={"VLLM_PLUGINS": "amortized"}) as server:
        yield server


def test_plain_vllm_serve_answers_info(plain_vllm_server: ServerProcess):
    info = httpx.get(f"{plain_vllm_server.base_url}/amortized/info").json()
    assert info["object"] == "amortized.info"
    assert info["models"][0]["id"] == "plain"


def test_the_fetched_folder_answers_with_its_own_template(plain_vllm_server: ServerProcess):
    client = openai.OpenAI(base_url=plain_vllm_server.base_url, api_key="none")
    reply = client.chat.completions.create(
        model="plain",
        messages=[{"role": "user", "content": "What is the capital of Japan?"}],
        max_tokens=24,
        temperature=0,
    )
    assert reply.choices[0].finish_reason == "stop"
    assert "Tokyo" in (reply.choices[0].message.content or "")
