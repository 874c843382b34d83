"""How a session reaches an engine: a tiny protocol, and its vLLM ``EngineClient`` adapter."""

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class GenerationRequest:
    """One engine request: a token prompt and how to sample after it."""

    prompt_token_ids: Sequence[int]
    max_tokens: int
    min_tokens: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: Sequence[int] = ()
    banned_token_ids: Sequence[int] = field(default_factory=tuple)


@dataclass(frozen=True)
class GenerationChunk:
    """New tokens (and their text) since the previous chunk of the same request."""

    token_ids: Sequence[int]
    text: str
    finish_reason: str | None = None
    cached_tokens: int | None = None


class GenerationBackend(Protocol):
    """What a session needs from an engine; tests and other servers can supply their own."""

    @property
    def max_model_len(self) -> int: ...

    def generate(
        self, request_id: str, request: GenerationRequest
    ) -> AsyncIterator[GenerationChunk]:
        """Stream a request's output; closing the iterator must abort the request."""
        ...

    async def abort(self, request_id: str) -> None: ...


class VLLMBackend:
    """Adapter over vLLM's ``EngineClient`` (``AsyncLLM``) in the API-server process."""

    def __init__(self, engine_client: Any) -> None:
        self._engine = engine_client

    @property
    def max_model_len(self) -> int:
        return int(self._engine.model_config.max_model_len)

    async def generate(
        self, request_id: str, request: GenerationRequest
    ) -> AsyncIterator[GenerationChunk]:
        from vllm import SamplingParams, TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            max_tokens=request.max_tokens,
            min_tokens=min(request.min_tokens, request.max_tokens),
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop_token_ids=list(request.stop_token_ids),
            logit_bias={t: -100.0 for t in request.banned_token_ids} or None,
            output_kind=RequestOutputKind.DELTA,
        )
        prompt = TokensPrompt(prompt_token_ids=list(request.prompt_token_ids))
        async for output in self._engine.generate(prompt, params, request_id):
            completion = output.outputs[0]
            yield GenerationChunk(
                token_ids=list(completion.token_ids),
                text=completion.text,
                finish_reason=completion.finish_reason,
                cached_tokens=output.num_cached_tokens,
            )

    async def abort(self, request_id: str) -> None:
        await self._engine.abort(request_id)
