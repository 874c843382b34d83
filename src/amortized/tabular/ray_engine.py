"""``--engine ray``: the batch job's pending chunks as a Ray Data pipeline.

The driver plans exactly like the local engine (:func:`~amortized.tabular.job.plan_job`: same
prompts, same seeds, same ``job.json``), so both engines give the same predictions and either
can resume the other's job. Pending chunk indices become a Ray Dataset; ``map_batches`` runs
them on a pool of actors that each reach one or more OpenAI-compatible endpoints (chunk ``i``
goes to endpoint ``i mod n``) or hold an in-process vLLM engine on a GPU. An actor writes a
chunk's part file atomically before returning it, so a killed worker or driver loses only
chunks in flight: Ray restarts the actor and retries its batch, a rerun skips finished parts,
and the driver assembles the output with :func:`~amortized.tabular.job.finish_job`. Part
files keyed by chunk index make duplicates impossible; the final check makes losses loud.
"""

import asyncio
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amortized.errors import AmortizedError
from amortized.llm.base import Completion, CompletionRequest, LLMBackend
from amortized.llm.vllm_local import _TokenizerMixin
from amortized.tabular.job import (
    JobSpec,
    PlannedJob,
    chunk_path,
    chunk_payload,
    chunk_progress,
    finish_job,
    plan_job,
    save_chunk,
    write_json_atomic,
)
from amortized.tabular.predictor import PredictionOptions, PreparedTask, TabularPredictor


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray pipeline runs (none of this changes predictions)."""

    address: str | None = None
    """``None``: the running cluster if there is one (``RAY_ADDRESS``), else a local one;
    ``"local"``: always a new local one. Unused when Ray is already initialized."""
    num_cpus: int | None = None
    """CPUs of a new local cluster (``None``: all)."""
    actors: int = 2
    """Actors in the pool, i.e. chunks in flight at once (times ``chunks_per_call``)."""
    chunks_per_call: int = 1
    """Chunks an actor runs concurrently in one call; raise it for many-replica endpoints."""
    cpus_per_actor: float = 0.25
    """HTTP actors mostly wait on the endpoint, so several share a CPU."""
    vllm_model: Path | None = None
    """Run prompts in-process with ``vllm.LLM(vllm_model)`` in each actor, not over HTTP."""
    gpus_per_actor: float = 1.0
    """GPUs per vLLM actor (ignored for HTTP actors)."""
    max_model_len: int | None = None
    """vLLM actors' context (``None``: the model's); the driver plans against the same."""
    vllm_args: dict[str, Any] = field(default_factory=dict)
    """More ``vllm.LLM`` keyword arguments for the actors (e.g. ``gpu_memory_utilization``)."""
    crash_test: tuple[int, str] | None = None
    """Test hook ``(n, marker)``: the first actor to start a batch when ``n`` part files exist
    exits hard, losing that batch, and creates ``marker`` so it happens once."""

    def __post_init__(self) -> None:
        if self.actors < 1 or self.chunks_per_call < 1:
            raise AmortizedError("--ray-actors and --ray-chunks-per-call must be at least 1")


@dataclass(frozen=True)
class Endpoints:
    """The OpenAI-compatible servers a job's chunks are spread over (same model on each)."""

    base_urls: tuple[str, ...]
    api_key: str | None = None
    model: str | None = None

    def backends(self) -> list[LLMBackend]:
        from amortized.llm import OpenAICompatibleBackend

        return [OpenAICompatibleBackend(url, self.api_key, self.model) for url in self.base_urls]


class TokenizerBackend(_TokenizerMixin, LLMBackend):
    """Planning without a server, for vLLM actors: the model's tokenizer and context, counted
    exactly as the actors' ``OfflineLLMBackend`` counts them."""

    def __init__(self, model: Path, max_model_len: int | None) -> None:
        from transformers import AutoConfig, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        config = AutoConfig.from_pretrained(model)
        self._max_len = max_model_len or int(config.max_position_embeddings)

    async def max_model_len(self) -> int:
        return self._max_len

    async def complete(self, request: CompletionRequest) -> Completion:
        raise NotImplementedError("the planning backend does not generate")


class ChunkError(RuntimeError):
    """A chunk that failed in a worker, naming the chunk and where it was sent."""


def _root_message(error: BaseException) -> str:
    """The worker's own message: Ray re-raises it as text inside a whole traceback."""
    marker = f"{ChunkError.__module__}.{ChunkError.__name__}: "
    for line in str(error).splitlines():
        if line.startswith(marker):
            return line.removeprefix(marker)
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


class ChunkWorker:
    """A Ray Data actor: predicts the chunks of each batch and writes their part files."""

    def __init__(
        self,
        task: Any,
        options: PredictionOptions,
        parts: str,
        endpoints: Endpoints | None,
        vllm_model: str | None = None,
        max_model_len: int | None = None,
        vllm_args: dict[str, Any] | None = None,
        crash_test: tuple[int, str] | None = None,
    ) -> None:
        import ray

        # The plan arrives as an object reference (nested, so Ray does not inline it per
        # actor): one copy per node in the object store instead of one per actor.
        self.task: PreparedTask = ray.get(task[0])
        self.parts = Path(parts)
        # On a node that does not see the driver's disk, parts are only relayed to the driver.
        self.shared = self.parts.is_dir()
        self.crash_test = crash_test
        # The backends' HTTP clients belong to one event loop; it runs on its own thread
        # because Ray Data may call this actor from a thread that already runs a loop.
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.backends: list[LLMBackend]
        if vllm_model is not None:
            import vllm

            from amortized.llm.vllm_local import OfflineLLMBackend

            llm = vllm.LLM(model=vllm_model, max_model_len=max_model_len, **(vllm_args or {}))
            self.backends = [OfflineLLMBackend(llm)]
            self.names = [f"vLLM({vllm_model})"]
        else:
            assert endpoints is not None
            self.backends = endpoints.backends()
            self.names = list(endpoints.base_urls)
        self.predictors = [TabularPredictor(b, options) for b in self.backends]

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        self._maybe_crash()
        indices = [int(i) for i in batch["chunk"]]
        payloads = asyncio.run_coroutine_threadsafe(self._batch(indices), self.loop).result()
        return {"chunk": indices, "payload": payloads}

    async def _batch(self, indices: list[int]) -> list[str]:
        return list(await asyncio.gather(*(self._one(i) for i in indices)))

    async def _one(self, index: int) -> str:
        path = chunk_path(self.parts, index)
        if self.shared and path.exists():  # a retried batch: finished before the worker died
            return path.read_text()
        which = index % len(self.predictors)
        try:
            result = await self.predictors[which].predict_chunk(self.task, index)
        except Exception as error:
            # Ray wraps this in its own exceptions; the driver digs the message out.
            raise ChunkError(f"chunk {index} at {self.names[which]}: {error}") from error
        if not self.shared:
            return json.dumps(chunk_payload(result))
        return json.dumps(save_chunk(self.parts, index, result))

    def _maybe_crash(self) -> None:
        """Test hook: die like an OOM-killed worker, once per job (a marker file says so)."""
        if self.crash_test is None:
            return
        after, marker = self.crash_test
        if len(list(self.parts.glob("chunk-*.json"))) < after:
            return
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
        os._exit(1)


def _start_ray(options: RayOptions) -> bool:
    """Connect to or start Ray, quietly; True when this call started it (and must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    new_cluster = options.address in (None, "local")
    try:
        ray.init(
            address=options.address,
            num_cpus=options.num_cpus if new_cluster else None,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise AmortizedError(f"cannot start or reach Ray at {options.address}: {error}") from error
    return True


async def plan(spec: JobSpec, endpoints: Endpoints | None, options: RayOptions) -> PlannedJob:
    """The local engine's planning, against the first endpoint or the vLLM model's tokenizer."""
    if options.vllm_model is not None:
        return await plan_job(spec, TokenizerBackend(options.vllm_model, options.max_model_len))
    assert endpoints is not None
    backend = endpoints.backends()[0]
    try:
        return await plan_job(spec, backend)
    finally:
        await backend.close()


def run_ray_job(
    spec: JobSpec,
    endpoints: Endpoints | None,
    options: RayOptions,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict every test row on Ray, resuming from ``spec.parts``; the local engine's summary."""
    if (endpoints is None) == (options.vllm_model is None):
        raise AmortizedError("give endpoints (--base-url) or --ray-vllm-model, exactly one")
    job = asyncio.run(plan(spec, endpoints, options))
    if job.pending:
        _run_pending(job, endpoints, options, progress)
    return finish_job(job)


def _run_pending(
    job: PlannedJob, endpoints: Endpoints | None, options: RayOptions, progress: bool
) -> None:
    import ray
    from ray.data import DataContext

    spec, task, pending = job.spec, job.task, job.pending

    started = _start_ray(options)
    try:
        context = DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        gpus = options.gpus_per_actor if options.vllm_model is not None else None
        dataset = ray.data.from_items(
            [{"chunk": i} for i in pending], override_num_blocks=min(len(pending), 10_000)
        ).map_batches(
            ChunkWorker,
            fn_constructor_kwargs={
                "task": [ray.put(task)],
                "options": spec.options,
                "parts": str(spec.parts.resolve()),
                "endpoints": endpoints,
                "vllm_model": None if options.vllm_model is None else str(options.vllm_model),
                "max_model_len": options.max_model_len,
                "vllm_args": options.vllm_args,
                "crash_test": options.crash_test,
            },
            batch_size=options.chunks_per_call,
            compute=ray.data.ActorPoolStrategy(size=options.actors),
            num_cpus=options.cpus_per_actor if gpus is None else 1,
            num_gpus=gpus,
        )
        bar = chunk_progress(job, progress)
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                for index, payload in zip(batch["chunk"], batch["payload"], strict=True):
                    # Workers on other nodes may not share this disk: keep what they relay.
                    path = chunk_path(spec.parts, int(index))
                    if not path.exists():
                        write_json_atomic(path, json.loads(str(payload)))
                    bar.update()
        finally:
            bar.close()
    except ray.exceptions.RayError as error:
        raise AmortizedError(
            f"the Ray job failed ({_root_message(error)}); finished chunks are kept, "
            "rerun the same command to resume"
        ) from error
    finally:
        if started:
            ray.shutdown()
