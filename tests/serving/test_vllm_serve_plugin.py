"""Plain ``vllm serve <default model>`` with ``VLLM_PLUGINS=amortized`` (no launcher).

This is the path users take when they keep their own vLLM command line; it also shows
that the default model's answers are shaped by its training text.
"""

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from amortized.models.corpus import vocabulary
from amortized.models.default import DefaultModelRecipe, ensure_default_model
from amortized.serving.process import ServerProcess, free_port

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def plain_vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    model = ensure_default_model()
    vllm = shutil.which("vllm", path=str(Path(sys.executable).parent)) or "vllm"
    port = free_port()
    argv = [
        vllm,
        "serve",
        str(model.path),
        "--port",
        str(port),
        "--enforce-eager",
        "--kv-cache-memory-bytes",
        "512M",
        "--served-model-name",
        "default",
    ]
    log = tmp_path_factory.mktemp("logs") / "plain-vllm.log"
    with ServerProcess(argv, port, log, env={"VLLM_PLUGINS": "amortized"}) as server:
        yield server


def test_plain_vllm_serve_answers_info(plain_vllm_server: ServerProcess):
    info = httpx.get(f"{plain_vllm_server.base_url}/amortized/info").json()
    assert info["object"] == "amortized.info"
    assert info["models"][0]["id"] == "default"


@pytest.mark.parametrize(
    "question", ["Hello", "What is the opposite of hot?", "Count from 3 to 6."]
)
def test_default_model_speaks_its_training_text(plain_vllm_server: ServerProcess, question):
    client = openai.OpenAI(base_url=plain_vllm_server.base_url, api_key="none")
    reply = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": question}],
        max_tokens=48,
        temperature=0,
    )
    text = reply.choices[0].message.content or ""
    assert reply.choices[0].finish_reason == "stop", text  # it learned to end its turn
    recipe = DefaultModelRecipe()
    known = vocabulary(recipe.seed, 2000)
    words = [w.strip(".,!?:;").lower() for w in text.split()]
    assert words, text
    share = sum(w in known for w in words) / len(words)
    assert share >= 0.8, (text, share)
