"""vLLM in this process: the server's own ``EngineClient`` (for the route) or an offline
``vllm.LLM`` (for the estimator and batch jobs without a server)."""

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from amortized.llm.base import (
    Completion,
    CompletionRequest,
    LLMBackend,
    Messages,
    TokenLogprobs,
    offsets_of,
)


def sampling_params(request: CompletionRequest) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    structured = None
    if request.json_schema is not None:
        structured = StructuredOutputsParams(json=request.json_schema)
    elif request.regex is not None:
        structured = StructuredOutputsParams(regex=request.regex)

    return SamplingParams(
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        top_k=0 if request.top_k is None else request.top_k,
        stop=list(request.stop) or None,
        n=request.n,
        logprobs=request.logprobs or None,
        structured_outputs=structured,
    )


def completion_from_output(output: Any) -> Completion:
    """A ``RequestOutput`` as a :class:`Completion`, with top-k logprobs per token."""
    sample = output.outputs[0]
    tokens = None
    if sample.logprobs:
        texts = []
        tops = []
        for token_id, alternatives in zip(sample.token_ids, sample.logprobs, strict=False):
            chosen = alternatives.get(token_id)
            texts.append(chosen.decoded_token if chosen and chosen.decoded_token else "")
            tops.append(
                {
                    alt.decoded_token: alt.logprob
                    for alt in alternatives.values()
                    if alt.decoded_token is not None
                }
            )
        tokens = [
            TokenLogprobs(token=t, offset=o, top=top)
            for t, o, top in zip(texts, offsets_of(texts), tops, strict=True)
        ]
    return Completion(
        text=sample.text,
        tokens=tokens,
        prompt_tokens=len(output.prompt_token_ids or ()),
        cached_tokens=int(output.num_cached_tokens or 0),
        completion_tokens=sum(len(s.token_ids) for s in output.outputs),
        finish_reason=sample.finish_reason,
        samples=tuple(s.text for s in output.outputs),
    )


class _TokenizerMixin:
    tokenizer: Any

    def render(self, prompt: str | Messages) -> str:
        if isinstance(prompt, str):
            return prompt
        text = self.tokenizer.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=True
        )
        return str(text)

    async def count_tokens(self, prompt: str | Messages) -> int:
        if isinstance(prompt, str):
            return len(self.tokenizer.encode(prompt))
        return len(self.tokenizer.encode(self.render(prompt), add_special_tokens=False))


class EngineClientBackend(_TokenizerMixin, LLMBackend):
    """The API server's engine (``AsyncLLM``), used by ``/v1/amortized/tabular/predict``."""

    def __init__(self, engine_client: Any) -> None:
        self._engine = engine_client
        self.tokenizer = engine_client.renderer.get_tokenizer()

    async def max_model_len(self) -> int:
        return int(self._engine.model_config.max_model_len)

    async def complete(self, request: CompletionRequest) -> Completion:
        request_id = f"tabular-{uuid.uuid4().hex}"
        final = None
        async for output in self._engine.generate(
            self.render(request.prompt), sampling_params(request), request_id
        ):
            final = output
        if final is None:
            raise RuntimeError("the engine returned no output")
        return completion_from_output(final)


class OfflineLLMBackend(_TokenizerMixin, LLMBackend):
    """A ``vllm.LLM`` in this process; requests are batched into one ``generate`` call."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm
        self.tokenizer = llm.get_tokenizer()
        self._lock = asyncio.Lock()

    async def max_model_len(self) -> int:
        return int(self._llm.llm_engine.model_config.max_model_len)

    async def complete(self, request: CompletionRequest) -> Completion:
        return (await self.complete_many([request]))[0]

    async def complete_many(self, requests: Sequence[CompletionRequest]) -> list[Completion]:
        prompts = [self.render(r.prompt) for r in requests]
        params = [sampling_params(r) for r in requests]
        async with self._lock:
            outputs = await asyncio.to_thread(self._llm.generate, prompts, params, use_tqdm=False)
        return [completion_from_output(o) for o in outputs]
