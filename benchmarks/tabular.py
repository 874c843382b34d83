"""Many-shot tabular prediction: amortized throughput and accuracy against classic baselines.

One run, one server, the same rows:

* throughput at 256 shots: one test row per prompt vs 50 rows per prompt vs 50 rows per
  prompt with a shared demonstration block (prefix cache). Reported: predictions/s and
  prefill tokens per prediction (prompt tokens minus prefix-cache hits);
* accuracy and macro-F1 on scikit-learn's iris, wine, breast_cancer, digits and a
  make_classification task at 8..512 shots, for the LLM and for random forest
  (n_estimators=30), kNN and majority baselines fitted on the same demonstrations.

By default it serves a tiny Llama with a 16k context, built locally in about two minutes and
trained only on the prompt format: its throughput figures are real, its accuracy is chance,
as expected. ``--base-url`` runs against any served model, e.g. MachineLearningLM-7B on a
GPU, for accuracy claims.
"""

import asyncio
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amortized.tabular.drafting import speculative_config
from benchmarks._harness import (
    add_model_option,
    base_parser,
    median,
    print_table,
    served_model,
    write_json,
)

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


def load(name: str, synthetic_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    if name == "synthetic":
        X, y = datasets.make_classification(
            n_samples=1500, n_features=8, n_informative=5, n_classes=3, random_state=synthetic_seed
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


def speculative_steps(target: Target) -> float:
    """vLLM's count of speculative decode steps so far, summed over requests; NaN when the
    server has no speculation or no reachable ``/metrics``."""
    import httpx

    from amortized.errors import AmortizedError
    from amortized.serving.process import vllm_metric

    try:
        return vllm_metric(target.base_url.removesuffix("/v1"), "vllm:spec_decode_num_drafts_total")
    except (AmortizedError, httpx.HTTPError):
        return float("nan")


def throughput(target: Target, shots: int, tests: int, repeats: int) -> dict[str, Any]:
    """The three prompt layouts on the same test rows.

    One row per prompt runs once (minutes, so steady); the 50-row layouts take seconds, so
    they run ``repeats`` times, interleaved, and report the median. Every run samples its
    own demonstrations (``sample_seed``), so no run finds another's prompts in the prefix
    cache: what is cached is only what the layout itself shares.
    """
    X, y = load("synthetic")
    X_train, y_train, X_test, _ = split(X, y, tests)
    plan = ["single"] + ["batched", "shared"] * repeats
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for number, mode in enumerate(plan):
        options = {
            "shots": shots,
            "seeds": (40,),
            "guided": "regex",
            "sample_seed": 42 + 10_000 * number,
            **MODES[mode],
        }
        steps_before = speculative_steps(target)
        result, seconds = asyncio.run(run_llm(target, options, X_train, y_train, X_test))
        n = len(result.labels)
        steps = speculative_steps(target) - steps_before
        runs[mode].append(
            {
                "seconds": seconds,
                "predictions_per_s": n / seconds,
                "prompts": result.usage.prompts,
                "prefill_tokens_per_prediction": result.usage.prefill_tokens / n,
                "prompt_tokens_per_prediction": result.usage.prompt_tokens / n,
                "completion_tokens_per_prediction": result.usage.completion_tokens / n,
                "speculative_steps_per_prediction": steps / n,
                "shots_used": result.shots,
                "parsed": sum(p.value == "parsed" for p in result.provenance) / n,
            }
        )
        print(f"  {mode}: {n / seconds:.2f} predictions/s", file=sys.stderr)
    rows: dict[str, Any] = {}
    for mode, measured in runs.items():
        rows[mode] = {
            key: median([run[key] for run in measured])
            for key in measured[0]
            if key not in ("prompts", "shots_used")
        }
        rows[mode] |= {
            "predictions": len(X_test),
            "prompts": measured[0]["prompts"],
            "shots_used": measured[0]["shots_used"],
            "runs": measured,
        }
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


SPECULATION = {
    "layout": speculative_config(),
    "ngram": '{"method": "ngram", "num_speculative_tokens": 8, "prompt_lookup_max": 8, '
    '"prompt_lookup_min": 2}',
}
"""Speculative decoding of the answers: drafts that know the answer layout (our proposer),
or vLLM's prompt lookup, which copies the previous row and so breaks at every id."""

MODEL_FOLDER = "bench-tabular-tiny-16k-v3"


def workload_texts(prompts: int = 60, answers: int = 100) -> list[str]:
    """Prompts with their answers in the benchmark's format, for the tokenizer and model.

    A real LLM's vocabulary has single tokens for JSON punctuation and common words like
    ``label``; a tokenizer trained on chat text alone spells them letter by letter, which
    would double the answer's length. Digits stay one token each, as in Qwen2. Each answer
    directly follows its prompt, as it will when served.
    """
    from amortized.tabular.encoding import column_order, encode_rows, fit_columns
    from amortized.tabular.prompt import (
        answer_text,
        demonstration_lines,
        query_lines,
        raw_prompt,
        user_prompt,
    )

    rng = np.random.RandomState(7)
    texts = []
    for index in range(prompts):
        X, y = load(DATASETS[index % len(DATASETS)], synthetic_seed=1)
        picked = rng.choice(len(X), size=48, replace=False)
        demos, queries = picked[:32], picked[32:]
        stats = fit_columns(X[demos].tolist())
        order = column_order(X.shape[1], index)
        classes = sorted(set(y.tolist()))
        codes = [classes.index(label) for label in y[demos].tolist()]
        user = user_prompt(
            len(order),
            sorted(set(codes)),
            demonstration_lines(encode_rows(X[demos].tolist(), stats, order), codes),
            query_lines(encode_rows(X[queries].tolist(), stats, order)),
        )
        texts.append(raw_prompt(user) + answer_text([classes.index(v) for v in y[queries]]))
    requirements = user[user.index("[Output requirements]") :]
    return texts + [requirements + answer for answer in answer_texts(answers, rng)]


def answer_texts(count: int, rng: np.random.RandomState) -> list[str]:
    """Answers alone, up to the benchmark's 50 rows, with random labels.

    The prompts above ask for 16 rows; without these the model never sees ids past 15.
    """
    from amortized.tabular.prompt import answer_text

    return [
        answer_text(rng.randint(0, int(rng.choice([2, 3, 4, 10])), size=rows).tolist())
        for rows in rng.choice([10, 20, 30, 50], size=count)
    ]


TRAIN_STEPS = 300


def build_bench_model(out: Path) -> None:
    """A tiny Llama (4x256, 16k context) that has seen the prompt format for two minutes.

    The training teaches it the answer's JSON layout, so under guided decoding it writes
    ``{"`` and ``label`` as single tokens like a real model (13 tokens per answer row, not
    19); it learns nothing about the benchmark's rows, so its accuracy stays near chance.
    """
    import torch

    from amortized.models.corpus import dialogues, message_texts
    from amortized.models.folder import write_manifest
    from amortized.models.shape import ModelShape, save_model_folder
    from amortized.models.tokenizer import train_tokenizer
    from amortized.models.training import train_causal_lm, warmup_cosine_lr

    start = time.perf_counter()
    texts = workload_texts()
    tokenizer = train_tokenizer(
        [*message_texts(dialogues(0, 400)), *texts], 1024, split_digits=True
    )
    shape = ModelShape(
        hidden_size=256,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=704,
        max_position_embeddings=16384,
    )
    model = shape.new_model(tokenizer, 0)
    stream = torch.tensor(
        [t for text in texts for t in tokenizer.encode(text + "\n")], dtype=torch.long
    )
    losses = train_causal_lm(
        model,
        stream,
        steps=TRAIN_STEPS,
        batch_size=8,
        seq_len=256,
        lr_at=lambda step: warmup_cosine_lr(step, 2e-3, 20, TRAIN_STEPS),
        seed=0,
        desc="train the benchmark model on the format",
    )
    save_model_folder(model, tokenizer, out, shape)
    write_manifest(
        out,
        {
            "kind": "bench-tabular",
            "shape": asdict(shape),
            "train_steps": TRAIN_STEPS,
            "final_loss": losses[-1],
            "seconds": time.perf_counter() - start,
        },
    )


@contextmanager
def local_server(cache: Path, speculation: str) -> Iterator[Target]:
    """The benchmark model behind ``amortized serve``."""
    from amortized.models.folder import ensure_folder
    from amortized.serving.process import ServerProcess, free_port

    folder = ensure_folder(cache / "models" / MODEL_FOLDER, build_bench_model).path
    port = free_port()
    argv = [sys.executable, "-m", "amortized", "serve", str(folder), "--port", str(port), "--"]
    argv += ["--max-model-len", "16384", "--block-size", "32", "--enable-prompt-tokens-details"]
    argv += ["--served-model-name", "tiny-16k", "--max-num-batched-tokens", "16384"]
    if speculation in SPECULATION:
        argv += ["--speculative-config", SPECULATION[speculation]]
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
    fig.suptitle("Many-shot scaling (LLM: tiny format-trained model unless --base-url)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="an OpenAI-compatible server (default: start one)")
    parser.add_argument("--api-key")
    add_model_option(parser, "a tiny Llama with a 16k context trained here on the format")
    parser.add_argument("--shots", type=int, default=256, help="shots for the throughput table")
    parser.add_argument("--tests", type=int, help="test rows (200 quick, 400)")
    parser.add_argument(
        "--repeats", type=int, help="runs of each 50-row layout, median reported (2 quick, 3)"
    )
    parser.add_argument(
        "--speculation",
        choices=[*SPECULATION, "off"],
        default="layout",
        help="speculative decoding of the answers (local server only; default: layout)",
    )
    args = parser.parse_args(argv)
    tests = args.tests or (200 if args.quick else 400)
    repeats = args.repeats or (2 if args.quick else 3)

    datasets = ("iris", "synthetic") if args.quick else DATASETS
    shots_list = (8, 32, 128) if args.quick else SHOTS

    def measure(target: Target) -> dict[str, Any]:
        print("throughput ...", file=sys.stderr)
        rows = throughput(target, args.shots, tests, repeats)
        return {"throughput": rows, "accuracy": accuracy_sweep(target, datasets, shots_list, tests)}

    if args.base_url:
        result = measure(Target(args.base_url, args.api_key, args.model))
        model = args.model or args.base_url
    elif args.model:
        from amortized.config import cache_dir

        options = ["--enable-prompt-tokens-details"]
        if args.speculation in SPECULATION:
            options += ["--speculative-config", SPECULATION[args.speculation]]
        log = cache_dir() / "logs" / "tabular-bench.log"
        with served_model(args.model, log, *options, max_model_len=None) as (root_url, name):
            result = measure(Target(f"{root_url}/v1", None, name))
        model = f"{args.model}; speculation: {args.speculation}"
    else:
        from amortized.config import cache_dir

        with local_server(cache_dir(), args.speculation) as target:
            result = measure(target)
        model = (
            "tiny Llama (4x256, 16k context) trained two minutes on the prompt format; "
            "chance-level accuracy expected"
        )
        model += f"; speculation: {args.speculation}"

    rows = result["throughput"]
    print(f"\nthroughput at {args.shots} shots, {tests} test rows ({model}):")
    print_table(
        ["mode", "runs", "predictions/s", "prefill tok/pred", "prompt tok/pred",
         "answer tok/pred", "spec steps/pred", "prompts", "shots used"],
        [
            [m, len(r["runs"]), r["predictions_per_s"], r["prefill_tokens_per_prediction"],
             r["prompt_tokens_per_prediction"], r["completion_tokens_per_prediction"],
             r["speculative_steps_per_prediction"], r["prompts"], r["shots_used"]]
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
    write_json(args.json, {"summary": summary, **result, "tests": tests, "repeats": repeats})
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
