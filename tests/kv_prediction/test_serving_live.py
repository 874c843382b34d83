"""KV prediction through the real engine and the official openai client.

Two servers on the session's tiny Llama: ``exact_server`` (fp32, identity predictor: the
predicted cache *is* the base's, so outputs must equal plain prefill, also under chunked
prefill and preemption) and ``trained_server`` (bf16, a quickly trained 0.5 predictor).
"""

import asyncio
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from amortized.kv_prediction import PredictorFolder
from amortized.models import ModelFolder
from amortized.serving.process import ServerProcess, ServerStartError, free_port, vllm_metric
from tests.conftest import AMORTIZED, API_KEY, amortized_server

pytestmark = pytest.mark.server


def kvp(flag: bool) -> dict[str, Any]:
    return {"kv_transfer_params": {"kv_prediction": flag}}


def serve(model: Path, predictor: Path, log: Path, *vllm_args: str) -> ServerProcess:
    return amortized_server(
        model,
        log,
        "--served-model-name",
        "tiny",
        *vllm_args,
        serve_args=["--kv-predictor", str(predictor)],
    )


def token_prompt(length: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(10, 500) for _ in range(length)]


@pytest.fixture(scope="module")
def exact_server(
    tiny_llama: ModelFolder,
    identity_predictor: PredictorFolder,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    """fp32; 128-token prefill chunks; a KV cache of 12 blocks, so 8 requests must preempt."""
    log = tmp_path_factory.mktemp("logs") / "kvp-exact.log"
    args = ["--dtype", "float32", "--max-model-len", "1024", "--enable-chunked-prefill"]
    args += ["--max-num-batched-tokens", "128", "--kv-cache-memory-bytes", "1572864"]
    with serve(tiny_llama.path, identity_predictor.path, log, *args) as server:
        yield server


@pytest.fixture(scope="module")
def trained_server(
    tiny_llama: ModelFolder,
    trained_predictor: PredictorFolder,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, Any]]:
    """bf16 (forced). Its very first request is a predicted one of 70 tokens."""
    log = tmp_path_factory.mktemp("logs") / "kvp-trained.log"
    args = ["--max-model-len", "512", "--dtype", "bfloat16"]
    with serve(tiny_llama.path, trained_predictor.path, log, *args) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY)
        first = client.completions.create(
            model="tiny", prompt=token_prompt(70, 0), max_tokens=4, temperature=0
        )
        yield server, first


def complete(client: openai.OpenAI, ids: list[int], flag: bool, max_tokens: int = 16) -> Any:
    return client.completions.create(
        model="tiny",
        prompt=ids,
        max_tokens=max_tokens,
        temperature=0,
        logprobs=3,
        extra_body=kvp(flag),
    )


def predicted_tokens(reply: Any) -> int | None:
    params = getattr(reply, "kv_transfer_params", None)
    return None if not params else int(params["predicted_tokens"])


def test_exact_kv_reproduces_plain_prefill_token_for_token(exact_server: ServerProcess):
    client = openai.OpenAI(base_url=exact_server.base_url, api_key=API_KEY)
    for length in (17, 70, 129, 300):
        ids = token_prompt(length, length)
        plain = complete(client, ids, flag=False)
        predicted = complete(client, ids, flag=True)
        assert predicted_tokens(plain) is None
        assert predicted_tokens(predicted) == length - 1
        a, b = plain.choices[0].logprobs, predicted.choices[0].logprobs
        assert a.tokens == b.tokens
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=2e-3)


async def test_concurrent_requests_under_preemption_stay_exact(exact_server: ServerProcess):
    """8 prompts that outgrow the 12-block cache while decoding, half of them predicted.

    Each needs 3 blocks of 128 tokens by its end, so 5 running at once must preempt. On a
    busy machine the requests can reach the server spread out, so a round in which too few
    overlapped is repeated with new prompts (at most 3 rounds); every round is checked.
    """
    client = openai.AsyncOpenAI(base_url=exact_server.base_url, api_key=API_KEY)

    async def run(ids: list[int], flag: bool) -> Any:
        return await client.completions.create(
            model="tiny",
            prompt=ids,
            max_tokens=100,
            temperature=0,
            logprobs=1,
            extra_body=kvp(flag),
        )

    before = preemptions(exact_server)
    rounds = []
    for round_index in range(3):
        prompts = [token_prompt(240 + i, 100 + i + 10 * round_index) for i in range(8)]
        replies = await asyncio.gather(*(run(p, i % 2 == 0) for i, p in enumerate(prompts)))
        rounds.append((prompts, replies))
        if preemptions(exact_server) > before:
            break
    assert preemptions(exact_server) > before, "the test should force preemption"
    for prompts, replies in rounds:
        for index, (ids, reply) in enumerate(zip(prompts, replies, strict=True)):
            alone = await run(ids, flag=False)
            assert reply.choices[0].logprobs.tokens == alone.choices[0].logprobs.tokens
            assert predicted_tokens(reply) == (len(ids) - 1 if index % 2 == 0 else None)


def preemptions(server: ServerProcess) -> float:
    return vllm_metric(server.root_url, "vllm:num_preemptions_total")


def test_first_request_of_a_fresh_bf16_engine_survives(trained_server):
    """Regression: on AMX CPUs this request once killed the worker with SIGILL (see connector).

    Every prompt token but the last is predicted, on every CPU: no block alignment.
    """
    server, first = trained_server
    assert first.choices[0].finish_reason in ("length", "stop")
    assert predicted_tokens(first) == 69
    assert httpx.get(f"{server.root_url}/health").status_code == 200


def test_trained_pair_answers_chat_and_reports_prediction(trained_server):
    server, _ = trained_server
    client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY)
    question = "Please count from one to ten, then tell me the opposite of hot. " * 4
    reply = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": question}],
        max_tokens=12,
        temperature=0,
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None
    assert reply.usage.prompt_tokens >= 32
    assert predicted_tokens(reply) == reply.usage.prompt_tokens - 1


def test_predicted_cache_is_really_used(trained_server):
    """An approximate predictor must move the logprobs; the exact path must not."""
    server, _ = trained_server
    client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY)
    moved = 0
    for seed in range(3):
        ids = token_prompt(90, seed)
        a = complete(client, ids, flag=False, max_tokens=4).choices[0].logprobs
        b = complete(client, ids, flag=True, max_tokens=4).choices[0].logprobs
        moved += abs(a.token_logprobs[0] - b.token_logprobs[0]) > 1e-3 or a.tokens != b.tokens
    assert moved >= 2


def test_a_prefix_hit_can_change_a_predicted_answer(trained_server):
    """The documented property (docs/kv_prediction.md, "Prefix-cache policy"): blocks cached
    by an earlier predicted request hold K/V the base computed on predicted context (its last
    prompt token and its output), where a cold request would predict them, so a later
    predicted request's output depends on what ran before it. Without history (fresh salts)
    the same request gives the same answer every time."""
    server, _ = trained_server
    client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY)
    first_prompt = token_prompt(150, 901)
    first = client.completions.create(
        model="tiny",
        prompt=first_prompt,
        max_tokens=140,
        temperature=0,
        logprobs=1,
        extra_body={**kvp(True), "return_tokens_as_token_ids": True, "ignore_eos": True},
    )
    logprobs: Any = first.choices[0].logprobs
    output_ids = [int(t.removeprefix("token_id:")) for t in logprobs.tokens]
    assert len(output_ids) == 140
    later = [*first_prompt, *output_ids, *token_prompt(40, 902)]

    def answer(salt: str | None) -> Any:
        body = {**kvp(True), **({"cache_salt": salt} if salt else {})}
        return (
            client.completions.create(
                model="tiny",
                prompt=later,
                max_tokens=4,
                temperature=0,
                logprobs=3,
                extra_body={**body, "return_tokens_as_token_ids": True},
            )
            .choices[0]
            .logprobs
        )

    warm, cold, cold_again = answer(None), answer("cold-1"), answer("cold-2")
    assert cold.tokens == cold_again.tokens
    assert cold.token_logprobs == pytest.approx(cold_again.token_logprobs, abs=1e-5)
    moved = abs(warm.token_logprobs[0] - cold.token_logprobs[0]) > 1e-4
    assert moved or warm.tokens != cold.tokens


def test_a_mostly_cached_prompt_is_computed_not_predicted(trained_server):
    """The next turn of a conversation hits the prefix cache: the auxiliary model would read
    the whole prompt to predict a short suffix, so the base computes the suffix instead."""
    server, _ = trained_server
    client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY)
    first = token_prompt(300, 777)
    assert predicted_tokens(complete(client, first, flag=True, max_tokens=2)) == 299
    follow_up = complete(client, [*first, *token_prompt(10, 778)], flag=True, max_tokens=2)
    assert predicted_tokens(follow_up) is None
    fresh = token_prompt(310, 779)
    assert predicted_tokens(complete(client, fresh, flag=True, max_tokens=2)) == 309


def test_opt_out_and_short_prompts_match_a_server_without_the_connector(
    trained_server, live_server: ServerProcess
):
    server, _ = trained_server
    with_kvp = openai.OpenAI(base_url=server.base_url, api_key=API_KEY)
    without = openai.OpenAI(base_url=live_server.base_url, api_key=API_KEY)
    for ids, flag in ((token_prompt(90, 7), False), (token_prompt(20, 8), True)):
        a = complete(with_kvp, ids, flag=flag).choices[0].logprobs
        b = complete(without, ids, flag=False).choices[0].logprobs
        assert a.tokens == b.tokens
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-6)


async def test_eight_concurrent_mixed_requests_complete(trained_server):
    server, _ = trained_server
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key=API_KEY)
    jobs: list[Any] = []
    for i in range(8):
        ids = token_prompt(40 + 37 * i, 50 + i)
        if i % 3 == 2:
            jobs.append(
                client.chat.completions.create(
                    model="tiny",
                    messages=[{"role": "user", "content": "hello " * (10 + 9 * i)}],
                    max_tokens=8,
                    extra_body=kvp(i % 2 == 0),
                )
            )
        else:
            jobs.append(
                client.completions.create(
                    model="tiny",
                    prompt=ids,
                    max_tokens=8,
                    extra_body=kvp(i % 2 == 0),
                )
            )
    replies = await asyncio.gather(*jobs)
    assert [r.choices[0].finish_reason in ("length", "stop") for r in replies] == [True] * 8
    assert sum(predicted_tokens(r) is not None for r in replies) == 4


def test_bad_option_is_a_400_and_the_server_keeps_serving(trained_server):
    server, _ = trained_server
    client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY)
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(
            model="tiny",
            prompt="hi",
            max_tokens=2,
            extra_body={"kv_transfer_params": {"kv_prediction": "yes"}},
        )
    assert "must be true or false" in str(caught.value)
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["param"] == "kv_transfer_params.kv_prediction"
    assert client.completions.create(model="tiny", prompt="hi", max_tokens=2).choices


def test_info_route_describes_the_predictor(trained_server, trained_predictor: PredictorFolder):
    server, _ = trained_server
    headers = {"Authorization": f"Bearer {API_KEY}"}
    info = httpx.get(f"{server.base_url}/amortized/kv-prediction", headers=headers).json()
    assert info["enabled"] is True
    assert info["predictor"] == str(trained_predictor.path)
    assert info["layer_map"] == [0, 0]
    assert info["min_prompt_tokens"] == 32
    assert "kv_prediction" in info["how_to"]
    caps = httpx.get(f"{server.base_url}/amortized/info", headers=headers).json()["capabilities"]
    assert "kv_prediction" in [c["name"] for c in caps]


def test_launcher_rejects_a_predictor_for_another_model(
    tiny_qwen2: ModelFolder, identity_predictor: PredictorFolder
):
    done = subprocess.run(
        [
            *AMORTIZED,
            "serve",
            str(tiny_qwen2.path),
            "--kv-predictor",
            str(identity_predictor.path),
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "model_type llama != qwen2 (predictor != served)" in lines[0]


@pytest.mark.slow
def test_plain_vllm_serve_refuses_a_mismatched_predictor(
    tiny_qwen2: ModelFolder, identity_predictor: PredictorFolder, tmp_path: Path
):
    """Without the launcher's check, the connector itself stops start-up, naming the field."""
    config = (
        '{"kv_connector":"KVPredictionConnector","kv_connector_module_path":'
        '"amortized.serving.kv_prediction.connector","kv_role":"kv_both",'
        f'"kv_connector_extra_config":{{"predictor":"{identity_predictor.path}"}}}}'
    )
    vllm = str(Path(sys.executable).parent / "vllm")
    port = free_port()
    argv = [
        vllm,
        "serve",
        str(tiny_qwen2.path),
        "--port",
        str(port),
        "--enforce-eager",
        "--kv-cache-memory-bytes",
        "64M",
        "--kv-transfer-config",
        config,
    ]
    server = ServerProcess(
        argv, port, tmp_path / "log", env={"VLLM_PLUGINS": "amortized"}, startup_timeout=300
    )
    with pytest.raises(ServerStartError, match="exited"):
        server.start()
    server.stop()
    log = (tmp_path / "log").read_text()
    assert "does not fit the served model" in log
    assert "model_type llama != qwen2 (predictor != served)" in log
