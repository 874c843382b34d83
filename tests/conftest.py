"""Shared fixtures: tiny models built in seconds, and one live vLLM server per session.

The live server is the real thing: ``amortized serve`` as a subprocess on a free port,
with ``--api-key`` so the auth tests use the same server as everything else.
"""

import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from amortized.models import ModelFolder, TinyModelSpec, build_tiny_model
from amortized.models.shape import ModelShape
from amortized.serving.process import ServerProcess, free_port

API_KEY = "test-key"
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
    model: Path,
    log: Path,
    *vllm_args: str,
    serve_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> ServerProcess:
    """``amortized serve MODEL SERVE_ARGS -- --api-key test-key VLLM_ARGS`` on a free port."""
    port = free_port()
    argv = [*AMORTIZED, "serve", str(model), "--port", str(port), *serve_args, "--"]
    return ServerProcess([*argv, "--api-key", API_KEY, *vllm_args], port, log, env=env)


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
    env = {"AMORTIZED_PROGRAM_LIBRARY": str(library)}
    with amortized_server(tiny_llama.path, log, *vllm_args, env=env) as server:
        yield server
