"""The real server (``amortized serve`` on a tiny Llama) through the official openai client."""

import re
import subprocess
import time

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from amortized.serving.process import ServerProcess
from tests.conftest import API_KEY

pytestmark = pytest.mark.server
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello"}]


def test_chat_completion_sync(live_server: ServerProcess):
    client = openai.OpenAI(base_url=live_server.base_url, api_key=API_KEY)
    reply = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=8, temperature=0
    )
    assert reply.choices[0].finish_reason in ("length", "stop")
    assert reply.usage is not None
    assert 0 < reply.usage.completion_tokens <= 8
    assert reply.model == "tiny"


def test_chat_completion_sync_streaming(live_server: ServerProcess):
    client = openai.OpenAI(base_url=live_server.base_url, api_key=API_KEY)
    stream = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=8, temperature=0, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) >= 2
    whole = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=8, temperature=0
    )
    assert text == whole.choices[0].message.content


async def test_chat_completion_async(live_server: ServerProcess):
    client = openai.AsyncOpenAI(base_url=live_server.base_url, api_key=API_KEY)
    reply = await client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=6, temperature=0
    )
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 6 or reply.choices[0].finish_reason == "stop"
    pieces = []
    stream = await client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=6, temperature=0, stream=True
    )
    async for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
    assert "".join(pieces) == reply.choices[0].message.content


def test_info_route(live_server: ServerProcess):
    response = httpx.get(
        f"{live_server.base_url}/amortized/info", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == 200
    info = response.json()
    assert info["object"] == "amortized.info"
    assert info["vllm_version"].startswith("0.32")
    assert [m["id"] for m in info["models"]] == ["tiny"]
    assert isinstance(info["capabilities"], list)


def test_api_key_guards_plugin_routes(live_server: ServerProcess):
    url = f"{live_server.base_url}/amortized/info"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    client = openai.OpenAI(base_url=live_server.base_url, api_key="wrong")
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_bad_request_gets_json_error_and_server_keeps_serving(live_server: ServerProcess):
    client = openai.OpenAI(base_url=live_server.base_url, api_key=API_KEY)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=MESSAGES, max_tokens=2)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=100000)
    assert client.models.list().data[0].id == "tiny"


def _banner_commands(log_text: str) -> list[str]:
    match = re.search(r"amortized: serving .*?Try:\n(.*?)\n\n", log_text, re.S)
    assert match, "no ready banner in the server log"
    return match.group(1).splitlines()


@pytest.mark.parametrize("route", ["completions", "chat"])
def test_asking_for_kv_prediction_without_a_predictor_is_a_400(
    live_server: ServerProcess, route: str
):
    client = openai.OpenAI(base_url=live_server.base_url, api_key=API_KEY)

    def ask(flag: bool) -> object:
        extra = {"kv_transfer_params": {"kv_prediction": flag}}
        if route == "chat":
            return client.chat.completions.create(
                model="tiny", messages=MESSAGES, max_tokens=2, extra_body=extra
            )
        return client.completions.create(model="tiny", prompt="hi", max_tokens=2, extra_body=extra)

    with pytest.raises(openai.BadRequestError) as caught:
        ask(True)
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["param"] == "kv_transfer_params.kv_prediction"
    assert "no KV predictor" in body["message"]
    assert "--kv-predictor" in body["message"]
    assert ask(False) is not None  # opting out is always fine, and the server kept serving


def test_printed_examples_work(live_server: ServerProcess):
    deadline = time.monotonic() + 30
    while "Try:" not in live_server.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    chat_curl, python_example, info_curl = _banner_commands(live_server.log_path.read_text())
    for command in (chat_curl, info_curl):
        out = subprocess.run(
            command, shell=True, capture_output=True, text=True, timeout=60, check=True
        ).stdout
        assert '"object":"chat.completion"' in out or '"object":"amortized.info"' in out, out
    proc = subprocess.run(
        python_example, shell=True, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
