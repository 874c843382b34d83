"""``amortized tabular predict``: resumable many-shot batch prediction (imports lazily)."""

import argparse
import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

from amortized.errors import AmortizedError

if TYPE_CHECKING:
    from amortized.cli import OneLineParser


def add_tabular_command(subparsers: "argparse._SubParsersAction[OneLineParser]") -> None:
    p = subparsers.add_parser("tabular", help="many-shot tabular prediction with an LLM")
    sub = p.add_subparsers(dest="tabular_command", required=True, parser_class=type(p))
    predict = sub.add_parser(
        "predict", help="predict a test file from a training file (CSV or Parquet), resumable"
    )
    predict.add_argument("--train", required=True, type=Path, help="rows with known labels")
    predict.add_argument("--test", required=True, type=Path, help="rows to predict")
    predict.add_argument("--target", required=True, help="the label column of --train")
    predict.add_argument("--out", required=True, type=Path, help="output .csv or .parquet")
    predict.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    predict.add_argument("--api-key")
    predict.add_argument("--model", help="served model name (default: the server's first)")
    predict.add_argument("--shots", type=int, default=256, help="demonstrations per prompt")
    predict.add_argument("--rows-per-prompt", type=int, default=50)
    predict.add_argument("--seeds", default="40,41", help="comma-separated voting seeds")
    predict.add_argument("--shared-demonstrations", action="store_true")
    predict.add_argument("--guided", choices=("json", "regex", "off"), default="json")
    predict.add_argument("--chat-template", action="store_true")
    predict.add_argument("--concurrency", type=int, default=8)
    predict.set_defaults(handler=_predict)


def _predict(args: argparse.Namespace) -> int:
    from amortized.llm import OpenAICompatibleBackend
    from amortized.tabular.job import JobSpec, run_job
    from amortized.tabular.predictor import PredictionOptions, TabularInputError

    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
        options = PredictionOptions(
            shots=args.shots,
            rows_per_prompt=args.rows_per_prompt,
            seeds=seeds,
            shared_demonstrations=args.shared_demonstrations,
            guided=args.guided,
            chat_template=args.chat_template,
            max_concurrency=args.concurrency,
        )
    except (ValueError, TabularInputError) as error:
        raise AmortizedError(f"bad option: {error}") from error
    if args.out.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise AmortizedError(f"--out {args.out}: use a .csv or .parquet file name")
    spec = JobSpec(args.train, args.test, args.target, args.out, options)

    async def run() -> dict[str, object]:
        backend = OpenAICompatibleBackend(args.base_url, args.api_key, args.model)
        try:
            return await run_job(spec, backend)
        finally:
            await backend.close()

    import openai

    try:
        summary = asyncio.run(run())
    except (OSError, openai.APIConnectionError) as error:
        raise AmortizedError(f"cannot reach {args.base_url}: {error}") from error
    except openai.APIStatusError as error:
        raise AmortizedError(f"the server refused a request: {error.message}") from error

    print(json.dumps(summary))
    return 0
