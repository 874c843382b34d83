"""Resumable batch prediction over CSV or Parquet files.

Each finished chunk of test rows is written atomically to ``OUT.parts/chunk-NNNNNN.json``
before the next one is trusted to memory, and the plan (shots, rows per prompt) is fixed
in ``OUT.parts/job.json`` on the first run. A rerun after a crash skips finished chunks and
refuses to mix with a different job; the output is written atomically at the end, one row
per test row, in input order. The local engine (:func:`run_job`) and the Ray engine
(:mod:`amortized.tabular.ray_engine`) share the plan, the part files and the assembly, so
either can resume the other's job.
"""

import asyncio
import hashlib
import json
import os
import shutil
import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from amortized.errors import AmortizedError
from amortized.llm.base import LLMBackend
from amortized.tabular.encoding import LabelCoding
from amortized.tabular.parsing import Provenance
from amortized.tabular.predictor import (
    ChunkResult,
    PredictionOptions,
    PreparedTask,
    TabularInputError,
    TabularPredictor,
    Usage,
)

JOB_VERSION = 1


def read_table(path: Path) -> Any:
    """A CSV or Parquet file as a pandas DataFrame; clear errors for what users get wrong."""
    import pandas as pd

    if not path.is_file():
        raise AmortizedError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt", ".tsv"):
            return pd.read_csv(path, encoding="utf-8", sep="\t" if suffix == ".tsv" else ",")
    except UnicodeDecodeError as error:
        raise AmortizedError(
            f"{path}: not UTF-8 text (byte {error.start}); re-encode it as UTF-8"
        ) from error
    except pd.errors.ParserError as error:
        raise AmortizedError(f"{path}: malformed CSV ({error}); check for ragged rows") from error
    except pd.errors.EmptyDataError as error:
        raise AmortizedError(f"{path}: the file is empty") from error
    raise AmortizedError(f"{path}: unsupported file type {suffix!r}; use .csv or .parquet")


def write_table(frame: Any, path: Path) -> None:
    """Atomically: a temporary file in the same folder, then a rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    if path.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(temporary, index=False)
    else:
        frame.to_csv(temporary, index=False)
    os.replace(temporary, path)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """A uniquely named temporary file, then a rename: writers on other processes may race."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    temporary.write_text(json.dumps(payload))
    os.replace(temporary, path)


@dataclass(frozen=True)
class JobSpec:
    train: Path
    test: Path
    target: str
    out: Path
    options: PredictionOptions

    @property
    def parts(self) -> Path:
        return self.out.with_name(self.out.name + ".parts")

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in (self.train, self.test):
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        digest.update(self.target.encode())
        digest.update(json.dumps(asdict(self.options), sort_keys=True, default=str).encode())
        return digest.hexdigest()[:16]


def split_features(frame: Any, target: str, name: str) -> tuple[list[str], list[list[Any]]]:
    columns = [c for c in frame.columns if c != target]
    if not columns:
        raise AmortizedError(f"{name} has no feature columns besides {target!r}")
    rows = frame[columns].astype(object).where(frame[columns].notna(), None).values.tolist()
    return [str(c) for c in columns], rows


@dataclass
class PlannedJob:
    """A job whose prompt plan is fixed in ``job.json``: what every engine shares."""

    spec: JobSpec
    test: Any
    """The test file as read, for the output columns."""
    task: PreparedTask
    done: set[int]
    """Chunks whose part files already exist (finished by any engine, in any earlier run)."""

    @property
    def pending(self) -> list[int]:
        return [i for i in range(len(self.task.chunks)) if i not in self.done]


def chunk_progress(job: PlannedJob, progress: bool) -> tqdm:
    """The chunks bar every engine shows, starting at the chunks already done."""
    return tqdm(
        total=len(job.task.chunks),
        initial=len(job.done),
        desc="chunks",
        disable=not progress,
        file=sys.stderr,
    )


def chunk_path(parts: Path, index: int) -> Path:
    return parts / f"chunk-{index:06d}.json"


def finished_chunks(parts: Path) -> set[int]:
    return {int(p.stem.split("-")[1]) for p in parts.glob("chunk-*.json")}


def save_chunk(parts: Path, index: int, result: ChunkResult) -> dict[str, Any]:
    """Write one chunk's part file atomically; returns its payload (for engines that relay it)."""
    payload = chunk_payload(result)
    write_json_atomic(chunk_path(parts, index), payload)
    return payload


async def plan_job(spec: JobSpec, backend: LLMBackend) -> PlannedJob:
    """Read and check the inputs, then fix the plan on the first run or reload it after."""
    train = read_table(spec.train)
    test = read_table(spec.test)
    if spec.target not in train.columns:
        raise AmortizedError(
            f"target column {spec.target!r} is not in {spec.train} "
            f"(columns: {', '.join(map(str, train.columns))})"
        )
    columns, train_rows = split_features(train, spec.target, str(spec.train))
    missing = [c for c in columns if c not in test.columns]
    if missing:
        raise AmortizedError(f"{spec.test} lacks the training columns {', '.join(missing)}")
    test_rows = test[columns].astype(object).where(test[columns].notna(), None).values.tolist()
    labels = train[spec.target].tolist()

    predictor = TabularPredictor(backend, spec.options)
    spec.parts.mkdir(parents=True, exist_ok=True)
    job_file = spec.parts / "job.json"
    fingerprint = spec.fingerprint()
    try:
        if job_file.exists():
            job = json.loads(job_file.read_text())
            if job.get("fingerprint") != fingerprint:
                raise AmortizedError(
                    f"{spec.parts} belongs to a different job (other inputs or options); "
                    "delete it or choose another --out"
                )
            coding = LabelCoding.fit(labels)
            task = PreparedTask(
                train_rows=train_rows,
                train_codes=coding.encode(labels),
                test_rows=test_rows,
                coding=coding,
                majority=job["majority"],
                shots=job["shots"],
                rows_per_prompt=job["rows_per_prompt"],
                warnings=job["warnings"],
                answer_tokens_per_row=job["answer_tokens_per_row"],
            )
        else:
            task = await predictor.prepare(train_rows, labels, test_rows)
            write_json_atomic(
                job_file,
                {
                    "version": JOB_VERSION,
                    "fingerprint": fingerprint,
                    "majority": task.majority,
                    "shots": task.shots,
                    "rows_per_prompt": task.rows_per_prompt,
                    "warnings": task.warnings,
                    "answer_tokens_per_row": task.answer_tokens_per_row,
                    "chunks": len(task.chunks),
                },
            )
    except TabularInputError as error:
        raise AmortizedError(str(error)) from error
    return PlannedJob(spec, test, task, finished_chunks(spec.parts))


def finish_job(job: PlannedJob) -> dict[str, Any]:
    """Assemble every chunk's part into the output (atomically, input order); a summary."""
    spec, task = job.spec, job.task
    missing = [i for i in range(len(task.chunks)) if not chunk_path(spec.parts, i).exists()]
    if missing:
        raise AmortizedError(
            f"{len(missing)} of {len(task.chunks)} chunks did not finish (first: {missing[0]}); "
            "rerun the same command to resume"
        )
    results = [_load_chunk(chunk_path(spec.parts, i)) for i in range(len(task.chunks))]
    for index, result in enumerate(results):
        if result.rows != task.chunks[index]:
            raise AmortizedError(f"{chunk_path(spec.parts, index)} does not match the job's plan")
    prediction = TabularPredictor.assemble(task, results)
    output = job.test.copy()
    output["prediction"] = prediction.labels
    output["provenance"] = [p.value for p in prediction.provenance]
    for index, label in enumerate(prediction.classes):
        output[f"proba_{label}"] = prediction.probabilities[:, index]
    write_table(output, spec.out)
    shutil.rmtree(spec.parts)
    counts = {p.value: prediction.provenance.count(p) for p in Provenance}
    return {
        "rows": len(task.test_rows),
        "chunks": len(task.chunks),
        "resumed_chunks": len(job.done),
        "shots": task.shots,
        "rows_per_prompt": task.rows_per_prompt,
        "provenance": counts,
        "warnings": task.warnings,
        "usage": asdict(prediction.usage),
    }


async def run_job(spec: JobSpec, backend: LLMBackend, *, progress: bool = True) -> dict[str, Any]:
    """Predict every test row in this process, resuming from ``spec.parts``; a summary."""
    job = await plan_job(spec, backend)
    predictor = TabularPredictor(backend, spec.options)
    bar = chunk_progress(job, progress)
    gate = asyncio.Semaphore(spec.options.max_concurrency)

    async def one(index: int) -> None:
        async with gate:
            result = await predictor.predict_chunk(job.task, index)
        save_chunk(spec.parts, index, result)
        bar.update()

    try:
        await asyncio.gather(*(one(i) for i in job.pending))
    finally:
        bar.close()
    return finish_job(job)


def chunk_payload(result: ChunkResult) -> dict[str, Any]:
    return {
        "start": result.rows.start,
        "stop": result.rows.stop,
        "probabilities": result.probabilities.tolist(),
        "provenance": [p.value for p in result.provenance],
        "usage": asdict(result.usage),
    }


def _load_chunk(path: Path) -> ChunkResult:
    data = json.loads(path.read_text())
    return ChunkResult(
        rows=range(data["start"], data["stop"]),
        probabilities=np.asarray(data["probabilities"]),
        provenance=[Provenance(p) for p in data["provenance"]],
        usage=Usage(**data["usage"]),
    )
