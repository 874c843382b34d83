"""Many-shot tabular prediction: amortized throughput and accuracy against classic baselines.

One run, one server, the same rows:

* throughput at 256 shots: one test row per prompt vs 50 rows per prompt vs 50 rows per
  prompt with a shared demonstration block (prefix cache). Reported: predictions/s and
  prefill tokens per prediction (prompt tokens minus prefix-cache hits);
* accuracy and macro-F1 on scikit-learn's iris, wine, breast_cancer, digits and a
  make_classification task at 8..512 shots, for the LLM and for random forest
  (n_estimators=30), kNN and majority baselines fitted on the same demonstrations.

By default it serves a random tiny Llama with a long context (built locally in seconds):
its throughput figures are real, its accuracy is chance, as expected. ``--base-url`` runs
against any served model, e.g. MachineLearningLM-7B on a GPU, for accuracy claims.
"""

import asyncio
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import base_parser, print_table, write_json

MODES = {
    "single": {"rows_per_prompt": 1, "shared_demonstrations": False},
    "batched": {"rows_per_prompt": 50, "shared_demonstrations": False},
    "shared": {"rows_per_prompt": 50, "shared_demonstrations": True},
}
DATASETS = ("iris", "wine", "breast_cancer", "digits", "synthetic")
SHOTS = (8, 16, 32, 64, 128, 256, 512)


@dataclass(frozen=True)
class Target:
    base_url: str
    api_key: str | None
    model: str | None


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    if name == "synthetic":
        X, y = datasets.make_classification(
            n_samples=1500, n_features=8, n_informative=5, n_classes=3, random_state=0
        )
        return X.round(4), y
    loader = getattr(datasets, f"load_{name}")
    X, y = loader(return_X_y=True)
    return np.asarray(X), np.asarray(y)


def split(X: np.ndarray, y: np.ndarray, tests: int) -> tuple[Any, Any, Any, Any]:
    order = np.random.RandomState(42).permutation(len(X))
    test = order[: min(tests, len(X) // 3)]
    train = order[len(test) :]
    return X[train], y[train], X[test], y[test]


async def run_llm(
    target: Target, options: dict[str, Any], X_train: Any, y_train: Any, X_test: Any
) -> tuple[Any, float]:
    from amortized.tabular import OpenAICompatibleBackend, PredictionOptions, TabularPredictor

    backend = OpenAICompatibleBackend(target.base_url, target.api_key, target.model)
    try:
        predictor = TabularPredictor(backend, PredictionOptions(**options))
        start = time.perf_counter()
        result = await predictor.predict(X_train.tolist(), y_train.tolist(), X_test.tolist())
        return result, time.perf_counter() - start
    finally:
        await backend.close()


def throughput(target: Target, shots: int, tests: int) -> dict[str, Any]:
    """The three prompt layouts on the same rows, one after another."""
    X, y = load("synthetic")
    X_train, y_train, X_test, _ = split(X, y, tests)
    rows: dict[str, Any] = {}
    for mode, layout in MODES.items():
        options = {"shots": shots, "seeds": (40,), "guided": "regex", **layout}
        result, seconds = asyncio.run(run_llm(target, options, X_train, y_train, X_test))
        n = len(result.labels)
        rows[mode] = {
            "predictions": n,
            "seconds": seconds,
            "predictions_per_s": n / seconds,
            "prompts": result.usage.prompts,
            "prompt_tokens_per_prediction": result.usage.prompt_tokens / n,
            "prefill_tokens_per_prediction": result.usage.prefill_tokens / n,
            "shots_used": result.shots,
            "parsed": sum(p.value == "parsed" for p in result.provenance) / n,
        }
        print(f"  {mode}: {n / seconds:.2f} predictions/s", file=sys.stderr)
    return rows


def baselines(X_train: Any, y_train: Any, X_test: Any, shots: int) -> dict[str, Any]:
    """Random forest, kNN and majority on the same ``shots`` demonstrations as the LLM."""
    from sklearn.dummy import DummyClassifier
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier

    from amortized.tabular.encoding import sample_demonstrations

    chosen = sample_demonstrations(len(X_train), shots, 42, 40)
    Xs, ys = X_train[chosen], y_train[chosen]
    models = {
        "random_forest": RandomForestClassifier(n_estimators=30, random_state=0),
        "knn": KNeighborsClassifier(n_neighbors=min(5, len(Xs))),
        "majority": DummyClassifier(strategy="most_frequent"),
    }
    return {name: model.fit(Xs, ys).predict(X_test) for name, model in models.items()}


def accuracy_sweep(
    target: Target, datasets: tuple[str, ...], shots_list: tuple[int, ...], tests: int
) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score
    from tqdm import tqdm

    results: dict[str, Any] = {}
    plan = [(d, s) for d in datasets for s in shots_list]
    for name, shots in tqdm(plan, desc="accuracy sweep", file=sys.stderr):
        X, y = load(name)
        X_train, y_train, X_test, y_test = split(X, y, tests)
        options = {"shots": shots, "shared_demonstrations": True, "guided": "regex"}
        result, _ = asyncio.run(run_llm(target, options, X_train, y_train, X_test))
        predictions = {
            "llm": np.asarray(result.labels),
            **baselines(X_train, y_train, X_test, shots),
        }
        entry = {
            model: {
                "accuracy": float(accuracy_score(y_test, predicted)),
                "macro_f1": float(f1_score(y_test, predicted, average="macro")),
            }
            for model, predicted in predictions.items()
        }
        entry["llm"]["shots_used"] = result.shots
        entry["llm"]["fallback_rows"] = sum(p.value != "parsed" for p in result.provenance)
        results.setdefault(name, {})[str(shots)] = entry
    return results


NGRAM_SPECULATION = (
    '{"method": "ngram", "num_speculative_tokens": 8, "prompt_lookup_max": 6, '
    '"prompt_lookup_min": 2}'
)
"""Prompt-lookup speculation: answers are repetitive JSON, so drafts are mostly accepted."""


@contextmanager
def local_server(cache: Path, speculation: bool) -> Iterator[Target]:
    """A random tiny Llama with a 16k context behind ``amortized serve``."""
    from amortized.models import TinyModelSpec, build_tiny_model
    from amortized.models.folder import validate_model_folder
    from amortized.models.shape import ModelShape
    from amortized.serving.process import ServerProcess, free_port

    folder = cache / "models" / "bench-tabular-tiny-16k"
    if not (folder / "config.json").exists():
        shape = ModelShape(
            hidden_size=256,
            num_layers=4,
            num_heads=4,
            num_kv_heads=2,
            intermediate_size=704,
            max_position_embeddings=16384,
        )
        build_tiny_model(folder, TinyModelSpec(shape=shape, vocab_size=1024))
    validate_model_folder(folder)
    port = free_port()
    argv = [sys.executable, "-m", "amortized", "serve", str(folder), "--port", str(port), "--"]
    argv += ["--max-model-len", "16384", "--block-size", "32", "--enable-prompt-tokens-details"]
    argv += ["--served-model-name", "tiny-16k", "--max-num-batched-tokens", "16384"]
    if speculation:
        argv += ["--speculative-config", NGRAM_SPECULATION]
    with ServerProcess(argv, port, cache / "logs" / "tabular-bench.log") as server:
        yield Target(server.base_url, None, "tiny-16k")


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = result["accuracy"]
    fig, axes = plt.subplots(1, len(sweep), figsize=(4 * len(sweep), 3.6), squeeze=False)
    for axis, (name, by_shots) in zip(axes[0], sweep.items(), strict=True):
        shots = [int(s) for s in by_shots]
        for model, style in (
            ("llm", "o-"),
            ("random_forest", "s--"),
            ("knn", "^--"),
            ("majority", ":"),
        ):
            axis.plot(
                shots, [by_shots[str(s)][model]["accuracy"] for s in shots], style, label=model
            )
        axis.set_xscale("log", base=2)
        axis.set_title(name)
        axis.set_xlabel("shots")
        axis.set_ylim(0, 1.05)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Many-shot scaling (LLM: random tiny model unless --base-url)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="an OpenAI-compatible server (default: start one)")
    parser.add_argument("--api-key")
    parser.add_argument("--model", help="served model name with --base-url")
    parser.add_argument("--shots", type=int, default=256, help="shots for the throughput table")
    parser.add_argument("--tests", type=int, help="test rows (200 quick, 400)")
    parser.add_argument(
        "--no-speculation",
        action="store_true",
        help="serve without n-gram speculative decoding (local server only)",
    )
    args = parser.parse_args(argv)
    tests = args.tests or (200 if args.quick else 400)

    datasets = ("iris", "synthetic") if args.quick else DATASETS
    shots_list = (8, 32, 128) if args.quick else SHOTS

    def measure(target: Target) -> dict[str, Any]:
        print("throughput ...", file=sys.stderr)
        rows = throughput(target, args.shots, tests)
        return {"throughput": rows, "accuracy": accuracy_sweep(target, datasets, shots_list, tests)}

    if args.base_url:
        result = measure(Target(args.base_url, args.api_key, args.model))
        model = args.model or args.base_url
    else:
        from amortized.config import cache_dir

        with local_server(cache_dir(), not args.no_speculation) as target:
            result = measure(target)
        model = "random tiny Llama (4x256, 16k context), chance-level accuracy expected"
        if not args.no_speculation:
            model += "; n-gram speculative decoding"

    rows = result["throughput"]
    print(f"\nthroughput at {args.shots} shots, {tests} test rows ({model}):")
    print_table(
        ["mode", "predictions/s", "prefill tok/pred", "prompt tok/pred", "prompts", "shots used"],
        [
            [m, r["predictions_per_s"], r["prefill_tokens_per_prediction"],
             r["prompt_tokens_per_prediction"], r["prompts"], r["shots_used"]]
            for m, r in rows.items()
        ],
    )  # fmt: skip
    print("\naccuracy / macro-F1:")
    table = []
    models = ("llm", "random_forest", "knn", "majority")
    for name, by_shots in result["accuracy"].items():
        for shots, entry in by_shots.items():
            scores = [f"{entry[m]['accuracy']:.2f}/{entry[m]['macro_f1']:.2f}" for m in models]
            table.append([name, shots, entry["llm"]["shots_used"], *scores])

    print_table(["dataset", "shots", "used", "llm", "rf", "knn", "majority"], table)
    summary = {
        "throughput_ratio_batched_vs_single": rows["batched"]["predictions_per_s"]
        / rows["single"]["predictions_per_s"],
        "throughput_ratio_shared_vs_batched": rows["shared"]["predictions_per_s"]
        / rows["batched"]["predictions_per_s"],
        "prefill_tokens_per_prediction": {
            m: rows[m]["prefill_tokens_per_prediction"] for m in MODES
        },
        "prefill_ratio_single_vs_batched": rows["single"]["prefill_tokens_per_prediction"]
        / rows["batched"]["prefill_tokens_per_prediction"],
        "shots": args.shots,
        "model": model,
    }
    print()
    for key, value in summary.items():
        print(f"{key}: {value}")
    write_json(args.json, {"summary": summary, **result, "tests": tests})
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
