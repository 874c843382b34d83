"""Any OpenAI-compatible server (vLLM's own, or ``amortized serve``).

Raw prompts go to ``/v1/completions``; chat messages to ``/v1/chat/completions``. Guided
decoding uses vLLM's ``structured_outputs`` request field; token counts use vLLM's
``/tokenize``, so budgets are planned with the served model's tokenizer.
"""

from dataclasses import replace
from typing import Any

import httpx
import openai

from amortized.llm.base import (
    Completion,
    CompletionRequest,
    LLMBackend,
    Messages,
    TokenLogprobs,
    offsets_of,
)


class OpenAICompatibleBackend(LLMBackend):
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        model: str | None = None,
        *,
        timeout: float = 600.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.root_url = self.base_url.removesuffix("/v1")
        self._api_key = api_key
        self._model = model
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=api_key or "none", timeout=timeout, max_retries=1
        )
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=self.root_url, headers=headers, timeout=timeout)
        self._max_len: int | None = None

    async def model(self) -> str:
        """The served model's name (the first one the server lists, unless given)."""
        if self._model is None:
            self._model = await first_served_model(self._client)
        return self._model

    async def max_model_len(self) -> int:
        if self._max_len is None:
            name = await self.model()
            reply = await self._http.get("/v1/models")
            reply.raise_for_status()
            for entry in reply.json().get("data", []):
                if entry.get("id") == name and entry.get("max_model_len"):
                    self._max_len = int(entry["max_model_len"])
            if self._max_len is None:
                raise RuntimeError(f"{self.base_url} does not report max_model_len for {name}")
        return self._max_len

    async def count_tokens(self, prompt: str | Messages) -> int:
        body: dict[str, Any] = {"model": await self.model()}
        if isinstance(prompt, str):
            body |= {"prompt": prompt, "add_special_tokens": True}
        else:
            body |= {"messages": prompt, "add_generation_prompt": True}
        reply = await self._http.post("/tokenize", json=body)
        reply.raise_for_status()
        return int(reply.json()["count"])

    async def complete(self, request: CompletionRequest) -> Completion:
        extra: dict[str, Any] = {} if request.top_k is None else {"top_k": request.top_k}
        if request.json_schema is not None:
            extra["structured_outputs"] = {"json": request.json_schema}
        elif request.regex is not None:
            extra["structured_outputs"] = {"regex": request.regex}

        common: dict[str, Any] = {
            "model": await self.model(),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "extra_body": extra,
        }
        if request.stop:
            common["stop"] = list(request.stop)
        if request.n > 1:
            common["n"] = request.n
        if isinstance(request.prompt, str):
            reply = await self._client.completions.create(
                prompt=request.prompt, logprobs=request.logprobs or None, **common
            )
            choice = reply.choices[0]
            tokens = None
            if choice.logprobs is not None and choice.logprobs.tokens:
                names = choice.logprobs.tokens
                offsets = choice.logprobs.text_offset or offsets_of(names)
                base = offsets[0] if offsets else 0
                tops = choice.logprobs.top_logprobs or [{} for _ in names]
                tokens = [
                    TokenLogprobs(token=t, offset=o - base, top=dict(top or {}))
                    for t, o, top in zip(names, offsets, tops, strict=False)
                ]
            completion = self._completion(choice.text, tokens, reply.usage, choice.finish_reason)
            return replace(completion, samples=tuple(c.text for c in reply.choices))
        chat = await self._client.chat.completions.create(
            messages=request.prompt,  # type: ignore[arg-type]
            logprobs=bool(request.logprobs),
            top_logprobs=request.logprobs or None,
            **common,
        )
        message = chat.choices[0]
        tokens = None
        content = message.logprobs.content if message.logprobs else None
        if content:
            names = [entry.token for entry in content]
            tokens = [
                TokenLogprobs(
                    token=entry.token,
                    offset=offset,
                    top={alt.token: alt.logprob for alt in entry.top_logprobs},
                )
                for entry, offset in zip(content, offsets_of(names), strict=True)
            ]
        completion = self._completion(
            message.message.content or "", tokens, chat.usage, message.finish_reason
        )
        return replace(completion, samples=tuple(c.message.content or "" for c in chat.choices))

    @staticmethod
    def _completion(
        text: str, tokens: list[TokenLogprobs] | None, usage: Any, finish_reason: str | None
    ) -> Completion:
        cached = 0
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        if details is not None and getattr(details, "cached_tokens", None):
            cached = int(details.cached_tokens)
        return Completion(
            text=text,
            tokens=tokens,
            prompt_tokens=int(usage.prompt_tokens) if usage else 0,
            cached_tokens=cached,
            completion_tokens=int(usage.completion_tokens) if usage else 0,
            finish_reason=finish_reason,
        )

    async def close(self) -> None:
        await self._client.close()
        await self._http.aclose()


async def first_served_model(client: openai.AsyncOpenAI) -> str:
    """The first model an OpenAI-compatible server lists (vLLM lists the served one)."""
    models = await client.models.list()
    if not models.data:
        raise RuntimeError(f"{client.base_url} serves no model")
    return models.data[0].id
