"""Many-shot prediction: plan the prompts, run them, parse, vote across seeds.

This is the core every interface shares (estimator, route, batch job, tool). It is async and
reaches models only through a :class:`~amortized.llm.LLMBackend`.
"""

import asyncio
import math
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from tqdm import tqdm

from amortized.llm.base import CompletionRequest, LLMBackend, Messages
from amortized.tabular.encoding import (
    Cell,
    EncodingReport,
    LabelCoding,
    as_number,
    column_order,
    encode_rows,
    fit_columns,
    sample_demonstrations,
)
from amortized.tabular.parsing import Provenance, rows_from_answer
from amortized.tabular.prompt import (
    answer_element,
    answer_regex,
    answer_schema,
    chat_messages,
    demonstration_lines,
    query_lines,
    raw_prompt,
    user_prompt,
)

PROVENANCE_RANK = {Provenance.PARSED: 0, Provenance.LOGPROB: 1, Provenance.MAJORITY: 2}


class TabularInputError(ValueError):
    """Input that cannot be predicted as given; the message says what to fix."""


@dataclass(frozen=True)
class PredictionOptions:
    """How prompts are built and decoded. Defaults follow the paper's evaluation."""

    shots: int = 256
    rows_per_prompt: int = 50
    seeds: tuple[int, ...] = (40, 41)
    sample_seed: int = 42
    shared_demonstrations: bool = False
    """One demonstration block (per seed) opens every prompt, so the prefix cache prefills
    it once per job instead of once per chunk."""
    guided: Literal["json", "regex", "off"] = "json"
    """Constrain the answer with vLLM structured outputs so it always parses: ``json`` (a JSON
    schema; small models need the server's ``disable_any_whitespace``) or ``regex`` (the
    reference layout exactly, any server)."""
    chat_template: bool = False
    """Send system + user as chat messages (the checkpoint's training format) instead of the
    reference evaluation's raw text."""
    logprobs: int = 10
    max_concurrency: int = 8
    context_margin: float = 0.1
    """Fraction of the context kept free for prompts longer than the planned one."""

    def __post_init__(self) -> None:
        if self.shots < 1 or self.rows_per_prompt < 1:
            raise TabularInputError("shots and rows_per_prompt must be at least 1")
        if not self.seeds:
            raise TabularInputError("give at least one seed")


@dataclass
class Usage:
    prompts: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0

    @property
    def prefill_tokens(self) -> int:
        """Prompt tokens the engine computed (prompt minus prefix-cache hits)."""
        return self.prompt_tokens - self.cached_tokens

    def add(self, other: "Usage") -> None:
        self.prompts += other.prompts
        self.prompt_tokens += other.prompt_tokens
        self.cached_tokens += other.cached_tokens
        self.completion_tokens += other.completion_tokens


@dataclass(frozen=True)
class PreparedTask:
    """Validated inputs plus the prompt plan that fits the model's context."""

    train_rows: list[list[Cell]]
    train_codes: list[int]
    test_rows: list[list[Cell]]
    coding: LabelCoding
    majority: int
    shots: int
    rows_per_prompt: int
    warnings: list[str]
    answer_tokens_per_row: float
    """Measured with the model's tokenizer on the widest possible answer element."""

    def answer_tokens(self, rows: int) -> int:
        """``max_tokens`` for an answer of ``rows`` elements, with headroom for spacing."""
        return 16 + math.ceil(rows * self.answer_tokens_per_row * 1.5)

    @property
    def chunks(self) -> list[range]:
        size = self.rows_per_prompt
        return [
            range(i, min(i + size, len(self.test_rows)))
            for i in range(0, len(self.test_rows), size)
        ]


@dataclass
class ChunkResult:
    """Voted predictions for one chunk of test rows."""

    rows: range
    probabilities: np.ndarray
    provenance: list[Provenance]
    usage: Usage


@dataclass
class TabularPrediction:
    classes: tuple[Cell, ...]
    labels: list[Cell]
    probabilities: np.ndarray
    provenance: list[Provenance]
    usage: Usage
    shots: int
    rows_per_prompt: int
    warnings: list[str] = field(default_factory=list)


def imputation_warnings(
    train_rows: Sequence[Sequence[Cell]], test_rows: Sequence[Sequence[Cell]]
) -> list[str]:
    """Say which numeric columns have cells that will be imputed (never a silent change)."""
    warnings = []
    for column in range(len(train_rows[0])):
        if not any(as_number(row[column]) is not None for row in train_rows):
            continue
        bad = sum(
            1 for rows in (train_rows, test_rows) for row in rows if as_number(row[column]) is None
        )
        if bad:
            warnings.append(
                f"column {column}: {bad} missing, infinite or non-numeric values are imputed "
                "with the demonstrations' mean"
            )
    return warnings


def check_rows(rows: Sequence[Sequence[Cell]], name: str, width: int | None) -> int:
    """The common row width; raises on ragged rows, naming the first bad one."""
    if not rows:
        raise TabularInputError(f"{name} has no rows")
    expected = len(rows[0]) if width is None else width
    if expected == 0:
        raise TabularInputError(f"{name} rows have no feature values")
    for index, row in enumerate(rows):
        if len(row) != expected:
            raise TabularInputError(
                f"{name} row {index} has {len(row)} values, expected {expected} "
                "(every row needs the same columns)"
            )
    return expected


class TabularPredictor:
    """Predicts test rows from demonstration rows with one served model."""

    def __init__(self, backend: LLMBackend, options: PredictionOptions | None = None) -> None:
        self.backend = backend
        self.options = options or PredictionOptions()

    # -- planning ---------------------------------------------------------------------

    async def prepare(
        self,
        train_rows: Sequence[Sequence[Cell]],
        train_labels: Sequence[Cell],
        test_rows: Sequence[Sequence[Cell]],
    ) -> PreparedTask:
        width = check_rows(train_rows, "the training data", None)
        check_rows(test_rows, "the test data", width)
        if len(train_labels) != len(train_rows):
            raise TabularInputError(
                f"{len(train_labels)} labels for {len(train_rows)} training rows"
            )
        try:
            coding = LabelCoding.fit(list(train_labels))
        except ValueError as error:
            raise TabularInputError(str(error)) from error
        codes = coding.encode(list(train_labels))
        majority = int(np.bincount(codes).argmax())
        rows = min(self.options.rows_per_prompt, len(test_rows))
        widest = answer_element(rows - 1, len(coding.classes) - 1) + ", "
        per_row = await self.backend.count_tokens(widest * 10) / 10
        task = PreparedTask(
            train_rows=[list(r) for r in train_rows],
            train_codes=codes,
            test_rows=[list(r) for r in test_rows],
            coding=coding,
            majority=majority,
            shots=min(self.options.shots, len(train_rows)),
            rows_per_prompt=rows,
            warnings=[],
            answer_tokens_per_row=per_row,
        )
        task.warnings.extend(imputation_warnings(task.train_rows, task.test_rows))
        return await self._fit_context(task)

    async def _fit_context(self, task: PreparedTask) -> PreparedTask:
        """Largest shots (then rows per prompt) whose prompt and answer fit the context."""
        limit = int(await self.backend.max_model_len() * (1 - self.options.context_margin))

        async def fits(shots: int, rows: int) -> bool:
            probe = replace(task, shots=shots, rows_per_prompt=rows)
            request = self._request(probe, probe.chunks[0], self.options.seeds[0], 0)
            needed = await self.backend.count_tokens(request.prompt) + request.max_tokens
            return needed <= limit

        shots, rows = task.shots, task.rows_per_prompt
        if await fits(shots, rows):
            return task
        if not await fits(1, 1):
            raise TabularInputError(
                f"one demonstration and one test row do not fit the model's context "
                f"({await self.backend.max_model_len()} tokens): the rows have too many "
                "features or too much text; drop columns or serve a model with a longer context"
            )
        if not await fits(1, rows):
            rows = await _largest(lambda r: fits(1, r), 1, rows)
        shots_fit = await _largest(lambda s: fits(s, rows), 1, shots)
        warnings = list(task.warnings)
        if shots_fit < task.shots:
            warnings.append(
                f"shots reduced from {task.shots} to {shots_fit} to fit the model's context"
            )
        if rows < task.rows_per_prompt:
            warnings.append(
                f"rows per prompt reduced from {task.rows_per_prompt} to {rows} to fit the context"
            )
        return replace(task, shots=shots_fit, rows_per_prompt=rows, warnings=warnings)

    def _request(
        self, task: PreparedTask, rows: range, seed: int, chunk_index: int
    ) -> CompletionRequest:
        options = self.options
        sample_seed = options.sample_seed + (0 if options.shared_demonstrations else chunk_index)
        chosen = sample_demonstrations(len(task.train_rows), task.shots, sample_seed, seed)
        demo_rows = [task.train_rows[i] for i in chosen]
        demo_codes = [task.train_codes[i] for i in chosen]
        stats = fit_columns(demo_rows)
        order = column_order(len(stats), seed)
        report = EncodingReport()
        demos = demonstration_lines(encode_rows(demo_rows, stats, order, report), demo_codes)
        tests = query_lines(encode_rows([task.test_rows[i] for i in rows], stats, order, report))
        label_set = sorted(set(demo_codes))
        user = user_prompt(len(order), label_set, demos, tests)
        prompt: str | Messages = chat_messages(user) if options.chat_template else raw_prompt(user)
        return CompletionRequest(
            prompt=prompt,
            max_tokens=task.answer_tokens(len(rows)),
            json_schema=answer_schema(len(rows), label_set) if options.guided == "json" else None,
            regex=answer_regex(len(rows), label_set) if options.guided == "regex" else None,
            logprobs=options.logprobs,
            label_codes=tuple(label_set),
        )

    # -- running ----------------------------------------------------------------------

    async def predict_chunk(self, task: PreparedTask, chunk_index: int) -> ChunkResult:
        """All seeds' prompts for one chunk, voted: summed class probabilities."""
        rows = task.chunks[chunk_index]
        classes = len(task.coding.classes)
        requests = [self._request(task, rows, seed, chunk_index) for seed in self.options.seeds]
        completions = await self.backend.complete_many(requests)
        total = np.zeros((len(rows), classes))
        provenance = [Provenance.MAJORITY] * len(rows)
        usage = Usage()
        for request, completion in zip(requests, completions, strict=True):
            label_codes = request.label_codes or tuple(range(classes))
            predictions = rows_from_answer(
                completion.text, completion.tokens, len(rows), label_codes, classes, task.majority
            )
            for i, prediction in enumerate(predictions):
                total[i] += prediction.probabilities
                if PROVENANCE_RANK[prediction.provenance] < PROVENANCE_RANK[provenance[i]]:
                    provenance[i] = prediction.provenance
            usage.add(
                Usage(
                    1,
                    completion.prompt_tokens,
                    completion.cached_tokens,
                    completion.completion_tokens,
                )
            )
        return ChunkResult(rows, total / len(requests), provenance, usage)

    async def predict(
        self,
        train_rows: Sequence[Sequence[Cell]],
        train_labels: Sequence[Cell],
        test_rows: Sequence[Sequence[Cell]],
        *,
        progress: bool = False,
    ) -> TabularPrediction:
        task = await self.prepare(train_rows, train_labels, test_rows)
        results = await self.run(task, range(len(task.chunks)), progress=progress)
        return self.assemble(task, results)

    async def run(
        self, task: PreparedTask, chunk_indices: Sequence[int], *, progress: bool = False
    ) -> list[ChunkResult]:
        """The given chunks, at most ``max_concurrency`` at a time, in order."""
        gate = asyncio.Semaphore(self.options.max_concurrency)
        bar = tqdm(total=len(chunk_indices), desc="chunks", disable=not progress, file=sys.stderr)

        async def one(index: int) -> ChunkResult:
            async with gate:
                result = await self.predict_chunk(task, index)
            bar.update()
            return result

        try:
            return list(await asyncio.gather(*(one(i) for i in chunk_indices)))
        finally:
            bar.close()

    @staticmethod
    def assemble(task: PreparedTask, results: Sequence[ChunkResult]) -> TabularPrediction:
        classes = len(task.coding.classes)
        probabilities = np.zeros((len(task.test_rows), classes))
        provenance = [Provenance.MAJORITY] * len(task.test_rows)
        usage = Usage()
        for result in results:
            probabilities[result.rows.start : result.rows.stop] = result.probabilities
            provenance[result.rows.start : result.rows.stop] = result.provenance
            usage.add(result.usage)
        labels = [task.coding.decode(int(i)) for i in probabilities.argmax(axis=1)]
        return TabularPrediction(
            classes=task.coding.classes,
            labels=labels,
            probabilities=probabilities,
            provenance=provenance,
            usage=usage,
            shots=task.shots,
            rows_per_prompt=task.rows_per_prompt,
            warnings=task.warnings,
        )


async def _largest(predicate: Callable[[int], Awaitable[bool]], low: int, high: int) -> int:
    """Largest n in [low, high] with predicate(n) true, given predicate(low) is true."""
    while low < high:
        middle = math.ceil((low + high + 1) / 2) if high - low > 1 else high
        if await predicate(middle):
            low = middle
        else:
            high = middle - 1
    return low
