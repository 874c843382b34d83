"""``amortized tabular predict``: resumable many-shot batch prediction (imports lazily)."""

import argparse
import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

from amortized.errors import AmortizedError

if TYPE_CHECKING:
    from amortized.cli_support import OneLineParser
    from amortized.tabular.job import JobSpec


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
    predict.add_argument(
        "--base-url",
        action="append",
        help="OpenAI-compatible endpoint (default http://127.0.0.1:8000/v1); "
        "repeat it with --engine ray to spread chunks over several servers",
    )
    predict.add_argument("--api-key")
    predict.add_argument("--model", help="served model name (default: the server's first)")
    predict.add_argument("--shots", type=int, default=256, help="demonstrations per prompt")
    predict.add_argument("--rows-per-prompt", type=int, default=50)
    predict.add_argument("--seeds", default="40,41", help="comma-separated voting seeds")
    predict.add_argument("--shared-demonstrations", action="store_true")
    predict.add_argument("--guided", choices=("json", "regex", "off"), default="json")
    predict.add_argument("--chat-template", action="store_true")
    predict.add_argument("--concurrency", type=int, default=8)
    predict.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process (asyncio); ray: a Ray Data pipeline on a Ray cluster",
    )
    ray = predict.add_argument_group("--engine ray")
    ray.add_argument(
        "--ray-address",
        help="cluster address; 'local' starts a local one (default: RAY_ADDRESS or local)",
    )
    ray.add_argument("--ray-num-cpus", type=int, help="CPUs of a local cluster")
    ray.add_argument("--ray-actors", type=int, default=2, help="actors in the pool")
    ray.add_argument(
        "--ray-chunks-per-call", type=int, default=1, help="chunks one actor runs concurrently"
    )
    ray.add_argument(
        "--ray-vllm-model",
        type=Path,
        help="run vLLM in each actor on this model (GPU nodes) instead of calling --base-url",
    )
    ray.add_argument("--ray-gpus-per-actor", type=float, default=1.0)
    ray.add_argument("--ray-max-model-len", type=int, help="context of the vLLM actors")
    ray.add_argument(
        "--ray-vllm-args",
        default="{}",
        help="more vllm.LLM arguments as a JSON object, e.g. '{\"gpu_memory_utilization\": 0.8}'",
    )
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
    base_urls = args.base_url or ["http://127.0.0.1:8000/v1"]
    if args.engine == "local" and len(base_urls) > 1:
        raise AmortizedError("the local engine takes one --base-url; use --engine ray for several")
    if args.ray_vllm_model is not None and (args.engine == "local" or args.base_url):
        raise AmortizedError("--ray-vllm-model needs --engine ray and replaces --base-url")

    async def run() -> dict[str, object]:
        backend = OpenAICompatibleBackend(base_urls[0], args.api_key, args.model)
        try:
            return await run_job(spec, backend)
        finally:
            await backend.close()

    import openai

    try:
        summary = asyncio.run(run()) if args.engine == "local" else _run_ray(args, spec, base_urls)
    except (OSError, openai.APIConnectionError) as error:
        raise AmortizedError(f"cannot reach {', '.join(base_urls)}: {error}") from error
    except openai.APIStatusError as error:
        raise AmortizedError(f"the server refused a request: {error.message}") from error

    print(json.dumps(summary))
    return 0


def _run_ray(args: argparse.Namespace, spec: "JobSpec", base_urls: list[str]) -> dict[str, object]:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise AmortizedError("--engine ray needs Ray: pip install 'amortized[ray]'")
    from amortized.cli_support import json_object_option
    from amortized.tabular.ray_engine import Endpoints, RayOptions, run_ray_job

    vllm_args = json_object_option(args.ray_vllm_args, "--ray-vllm-args")
    options = RayOptions(
        address=args.ray_address,
        num_cpus=args.ray_num_cpus,
        actors=args.ray_actors,
        chunks_per_call=args.ray_chunks_per_call,
        vllm_model=args.ray_vllm_model,
        gpus_per_actor=args.ray_gpus_per_actor,
        max_model_len=args.ray_max_model_len,
        vllm_args=vllm_args,
    )
    endpoints = None
    if args.ray_vllm_model is None:
        endpoints = Endpoints(tuple(base_urls), args.api_key, args.model)
    return run_ray_job(spec, endpoints, options)
