"""The session state machine: append text, think between chunks, answer at end of turn.

Design (see docs/think_while_listening.md): every engine request is an ordinary request
whose prompt is the session's whole context so far. The context only grows by appending
(user text, closed think blocks, answers), so each prompt extends the previous one and
vLLM's prefix cache supplies the KV of everything already computed. Stopping thinking is
an abort of one request, which is immediate. vLLM's streaming-input sessions would keep
the KV without the prefix cache, but they queue a new chunk until the running generation
finishes, which is exactly what a listener must not do.
"""

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from amortized.serving.listening.backend import GenerationBackend, GenerationRequest
from amortized.serving.listening.config import BargeIn, SessionConfig, ThinkingSchedule
from amortized.serving.listening.events import (
    AnswerDelta,
    ChunkAppended,
    ErrorCode,
    ErrorEvent,
    Latency,
    ResponseCreated,
    ResponseDone,
    SessionError,
    SessionEvent,
    ThinkingDelta,
    ThinkingDone,
    TurnCommitted,
    Usage,
)
from amortized.serving.listening.frame import ChatFrame, TemplateTokenizer

ResponseStatus = Literal["completed", "cancelled", "incomplete", "failed"]
ABORT_GRACE_S = 1.0
"""How long stopping one generation may take before the session moves on without it."""

StopReason = Literal["budget", "time", "model", "interrupted", "end_of_turn"]


@dataclass
class _Turn:
    """Book-keeping for the user turn being heard or answered."""

    index: int
    input_tokens: int = 0
    thinking_tokens: int = 0
    chunks: int = 0
    cached_tokens: int = 0
    computed_prompt_tokens: int = 0
    committed_at: float | None = None
    answer_from: int = 0
    """Context length before the answer prompt; a cancelled answer rolls back to it."""


@dataclass
class _Generation:
    """One engine request (or, for an answer, the task that runs it) and its output so far."""

    request_id: str
    chunk: int = 0
    task: "asyncio.Task[None] | None" = None
    token_ids: list[int] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    first_token_at: float | None = None
    stopped_by: StopReason | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


class ListeningSession:
    """One conversation with a model that thinks while it listens.

    Call the methods one at a time (the WebSocket reader loop does); events come out of
    :meth:`events` in order. Client mistakes raise :class:`SessionError` and change nothing.
    """

    def __init__(
        self,
        backend: GenerationBackend,
        tokenizer: TemplateTokenizer,
        config: SessionConfig | None = None,
        *,
        session_id: str | None = None,
    ) -> None:
        self.id = session_id or f"sess_{uuid.uuid4().hex[:16]}"
        self.config = config or SessionConfig()
        self._backend = backend
        self._tokenizer = tokenizer
        self._frame = self._make_frame(self.config)
        self._context: list[int] = []
        self._turns = itertools.count()
        self._requests = itertools.count()
        self._turn: _Turn | None = None
        self._thinking: _Generation | None = None
        self._answer: _Generation | None = None
        self._events: asyncio.Queue[SessionEvent | None] = asyncio.Queue()
        self._closed = False

    # -- public API -------------------------------------------------------------------

    @property
    def context_token_ids(self) -> tuple[int, ...]:
        """The session's context as the model sees it (history, heard text, thoughts)."""
        return tuple(self._context)

    @property
    def answering(self) -> bool:
        return self._answer is not None

    def update(self, config: SessionConfig) -> None:
        """Apply new settings; the system prompt and think markers are fixed once heard."""
        frame_fields = ("instructions", "think_open", "think_close")
        changed = any(getattr(config, f) != getattr(self.config, f) for f in frame_fields)
        if changed and self._context:
            raise SessionError(
                ErrorCode.SESSION_ALREADY_STARTED,
                "instructions and think markers can only change before the first input",
            )
        if changed:
            self._frame = self._make_frame(config)
        self.config = config

    async def append(self, text: str) -> None:
        """Add heard text to the current turn (starting one, or barging in on an answer)."""
        if not text:
            raise SessionError(ErrorCode.INVALID_EVENT, "append needs non-empty text")
        tokens = self._tokenizer.encode(text, add_special_tokens=False)
        if self._answer is not None:
            await self._stop_answer(barge_in=True)
        await self._stop_thinking("interrupted")
        opening = list(self._frame.first_user_open) if not self._context else []
        reserve = len(self._frame.user_close) + 1
        needed = len(self._context) + len(opening) + len(tokens) + reserve
        if needed > self._backend.max_model_len:
            raise SessionError(
                ErrorCode.CONTEXT_LENGTH_EXCEEDED,
                f"this input would take the session to {needed} tokens (context "
                f"{len(self._context)}, new {len(opening) + len(tokens)}, kept for the answer "
                f"{reserve}) but the model's limit is {self._backend.max_model_len}; "
                "start a new session or send less",
            )
        if self._turn is None:
            self._turn = _Turn(index=next(self._turns))
        turn = self._turn
        self._context += opening + tokens
        turn.input_tokens += len(tokens)
        chunk = turn.chunks
        turn.chunks += 1
        self._emit(ChunkAppended(chunk_index=chunk, tokens=len(tokens)))
        thinking = self.config.thinking
        left = thinking.budget_tokens - turn.thinking_tokens
        if thinking.schedule is ThinkingSchedule.WHILE_LISTENING and left > 0:
            self._start_thinking(chunk, min(left, thinking.chunk_tokens), thinking.chunk_ms)

    async def commit(self) -> str:
        """End the user's turn: stop thinking at once and start the answer; returns its id."""
        if self._answer is not None:
            raise SessionError(
                ErrorCode.RESPONSE_IN_PROGRESS, "an answer is streaming; cancel it first"
            )
        turn = self._turn
        if turn is None or turn.input_tokens == 0:
            raise SessionError(ErrorCode.INPUT_BUFFER_EMPTY, "nothing was appended to commit")
        turn.committed_at = time.perf_counter()
        await self._stop_thinking("end_of_turn")
        self._emit(TurnCommitted(turn_index=turn.index, input_tokens=turn.input_tokens))
        turn.answer_from = len(self._context)
        self._context += self._frame.user_close
        answer = _Generation(request_id=self._request_id("resp"))
        self._answer = answer
        self._emit(ResponseCreated(response_id=answer.request_id))
        answer.task = asyncio.create_task(self._run_answer(answer, turn))
        return answer.request_id

    async def cancel(self) -> None:
        """``response.cancel``: stop the answer (the history follows the barge-in setting)."""
        if self._answer is None:
            raise SessionError(ErrorCode.NO_RESPONSE, "no answer is in progress")
        await self._stop_answer(barge_in=False)

    async def wait_answer(self) -> None:
        """Until the current answer, if any, has finished and its events are queued."""
        answer = self._answer
        if answer is not None and answer.task is not None:
            await asyncio.shield(answer.task)

    async def close(self) -> None:
        """Abort whatever runs; idempotent. Leaves no engine request behind."""
        if self._closed:
            return
        await self._stop_answer(barge_in=False)
        await self._stop_thinking("interrupted")
        self._closed = True
        self._events.put_nowait(None)

    async def events(self) -> AsyncIterator[SessionEvent]:
        """Every event in order, until :meth:`close`."""
        while (event := await self._events.get()) is not None:
            yield event

    # -- thinking ---------------------------------------------------------------------

    def _start_thinking(self, chunk: int, max_tokens: int, limit_ms: float | None) -> None:
        """Think after the context as it stands, within the budget and the model's limit."""
        frame = self._frame
        room = (
            self._backend.max_model_len
            - len(self._context)
            - len(frame.think_open)
            - len(frame.think_close)
            - len(frame.user_close)
            - 1
        )
        max_tokens = min(max_tokens, room)
        if max_tokens <= 0:
            return
        thinking = self.config.thinking
        generation = _Generation(request_id=self._request_id("think"), chunk=chunk)
        request = GenerationRequest(
            prompt_token_ids=[*self._context, *frame.think_open],
            max_tokens=max_tokens,
            min_tokens=thinking.min_tokens,
            temperature=thinking.temperature,
            top_p=thinking.top_p,
            stop_token_ids=[*frame.stop_token_ids, *frame.think_close[-1:]],
        )
        self._thinking = generation
        generation.task = asyncio.create_task(self._run_thinking(generation, request, limit_ms))

    async def _run_thinking(
        self, generation: _Generation, request: GenerationRequest, limit_ms: float | None
    ) -> None:
        emit = self.config.thinking.emit
        try:
            async with asyncio.timeout(None if limit_ms is None else limit_ms / 1000):
                await self._consume(generation, request, emit_thinking=emit)
        except TimeoutError:
            generation.stopped_by = "time"
            await self._backend.abort(generation.request_id)
        except Exception as error:  # the engine failed; say so and keep the session
            self._emit(ErrorEvent(ErrorCode.ENGINE_ERROR, f"thinking failed: {error}"))
        if self._thinking is generation:
            reason: StopReason = "budget" if generation.finish_reason == "length" else "model"
            self._close_thinking(generation, generation.stopped_by or reason)

    async def _stop_thinking(self, reason: StopReason) -> None:
        generation = self._thinking
        if generation is None:
            return
        if generation.running:
            await self._abort(generation)
        if self._thinking is generation:
            self._close_thinking(generation, reason)

    def _close_thinking(self, generation: _Generation, reason: StopReason) -> None:
        """Put the thought, as far as it got, into the context between the markers."""
        self._thinking = None
        frame = self._frame
        tokens = [t for t in generation.token_ids if t not in frame.stop_token_ids]
        if frame.think_close and tuple(tokens[-len(frame.think_close) :]) == frame.think_close:
            tokens = tokens[: -len(frame.think_close)]
        if self._turn is not None:
            self._turn.thinking_tokens += len(generation.token_ids)
        if tokens:
            self._context += [*frame.think_open, *tokens, *frame.think_close]
        self._emit(
            ThinkingDone(
                chunk_index=generation.chunk, tokens=len(generation.token_ids), reason=reason
            )
        )

    # -- answering --------------------------------------------------------------------

    async def _run_answer(self, answer: _Generation, turn: _Turn) -> None:
        """Think first if the schedule says so (the baseline), then stream the answer."""
        thinking = self.config.thinking
        if thinking.schedule is ThinkingSchedule.AFTER_TURN and thinking.budget_tokens > 0:
            self._start_thinking(turn.chunks, thinking.budget_tokens, thinking.chunk_ms)
            if self._thinking is not None and self._thinking.task is not None:
                await asyncio.shield(self._thinking.task)
        settings = self.config.answer
        room = self._backend.max_model_len - len(self._context)
        request = GenerationRequest(
            prompt_token_ids=list(self._context),
            max_tokens=max(1, min(settings.max_tokens, room)),
            min_tokens=settings.min_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            seed=settings.seed,
            stop_token_ids=self._frame.stop_token_ids,
            banned_token_ids=self._frame.think_open[:1],
        )
        try:
            await self._consume(answer, request, emit_thinking=False, is_answer=True)
        except Exception as error:  # the engine failed; say so and keep the session
            self._emit(ErrorEvent(ErrorCode.ENGINE_ERROR, f"the answer failed: {error}"))
            if self._answer is answer:
                self._finish_answer(answer, turn, "failed", keep=False)
            return
        if self._answer is answer:
            self._finish_answer(answer, turn, "completed", keep=True)

    async def _stop_answer(self, *, barge_in: bool) -> None:
        answer, turn = self._answer, self._turn
        if answer is None or turn is None:
            return
        await self._stop_thinking("interrupted")
        if answer.running:
            await self._abort(answer)
        if self._answer is answer:
            keep = self.config.barge_in is BargeIn.TRUNCATE
            status: ResponseStatus = "incomplete" if keep and barge_in else "cancelled"
            self._finish_answer(answer, turn, status, keep=keep)

    def _finish_answer(
        self,
        answer: _Generation,
        turn: _Turn,
        status: ResponseStatus,
        *,
        keep: bool,
    ) -> None:
        self._answer = None
        if keep:
            self._turn = None
            self._context += [*answer.token_ids, *self._frame.answer_close(answer.token_ids)]
        else:
            # Forget the answer: the user's turn is open again and new words continue it.
            del self._context[turn.answer_from :]
        now = time.perf_counter()
        committed = turn.committed_at or now
        first = answer.first_token_at
        self._emit(
            ResponseDone(
                response_id=answer.request_id,
                status=status,
                text="".join(answer.text),
                usage=Usage(
                    input_tokens=turn.input_tokens,
                    thinking_tokens=turn.thinking_tokens,
                    output_tokens=len(answer.token_ids),
                    cached_tokens=turn.cached_tokens,
                    computed_prompt_tokens=turn.computed_prompt_tokens,
                ),
                latency=Latency(
                    end_of_turn_to_first_token_ms=None
                    if first is None
                    else (first - committed) * 1000,
                    end_of_turn_to_done_ms=(now - committed) * 1000,
                ),
                finish_reason=answer.finish_reason,
            )
        )

    # -- shared -----------------------------------------------------------------------

    async def _consume(
        self,
        generation: _Generation,
        request: GenerationRequest,
        *,
        emit_thinking: bool,
        is_answer: bool = False,
    ) -> None:
        """Stream one request into ``generation``, emitting answer or thinking deltas."""
        turn = self._turn
        counted = False
        async for chunk in self._backend.generate(generation.request_id, request):
            if not counted and chunk.cached_tokens is not None and turn is not None:
                turn.cached_tokens += chunk.cached_tokens
                turn.computed_prompt_tokens += len(request.prompt_token_ids) - chunk.cached_tokens
                counted = True
            if chunk.finish_reason is not None:
                generation.finish_reason = chunk.finish_reason
            if not chunk.token_ids:
                continue
            if generation.first_token_at is None:
                generation.first_token_at = time.perf_counter()
            generation.token_ids += chunk.token_ids
            generation.text.append(chunk.text)
            if is_answer and chunk.text:
                self._emit(AnswerDelta(response_id=generation.request_id, delta=chunk.text))
            elif emit_thinking and chunk.text:
                self._emit(ThinkingDelta(chunk_index=generation.chunk, delta=chunk.text))

    async def _abort(self, generation: _Generation) -> None:
        """Stop a running request now: cancel its consumer, tell the engine, wait.

        Both waits are bounded: during a server shutdown the engine may already be gone, and
        an abort sent to it would never return (the session must still close).
        """
        assert generation.task is not None
        generation.task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ABORT_GRACE_S):
                await self._backend.abort(generation.request_id)
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(ABORT_GRACE_S):
                await generation.task

    def _request_id(self, kind: str) -> str:
        return f"{self.id}-{kind}-{next(self._requests)}"

    def _make_frame(self, config: SessionConfig) -> ChatFrame:
        return ChatFrame.from_tokenizer(
            self._tokenizer,
            instructions=config.instructions,
            think_open=config.think_open,
            think_close=config.think_close,
        )

    def _emit(self, event: SessionEvent) -> None:
        if not self._closed:
            self._events.put_nowait(event)
