"""KV prediction on a real pretrained base: the ``--model`` path of benchmarks/kv_prediction.py.

Predictors are trained on real English text (CPython's docstrings and reference topics,
PSF-2.0, ``amortized.testing.text_corpus``) within one wall-clock budget each: KVP-0.25 with
the ``input`` and the paper's ``block`` layer map, KVP-0.5, and a "smaller model" baseline
(the same 0.25-pruned model trained on its language-model loss alone). Quality is measured in
transformers with the serving runtime (held-out perplexity of a continuation after a
predicted prompt; pass-key retrieval from held-out text at 512-2048 tokens); TTFT, a
multi-turn chat with a shared system prompt and inter-token latency under load are measured
on one vLLM server with prefix caching on, base (opt-out) and KVP (opt-in) interleaved.
"""

import asyncio
import contextlib
import itertools
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks._harness import bootstrap_ci, median, wilson

REAL_LENGTHS = (512, 1024, 2048)
PASSKEY_TOKENS = 6


@dataclass(frozen=True)
class RealRecipe:
    """Training settings shared by every predictor of the real-model run. ``step_scale``
    multiplies every run's step count (the quick run trains a tenth)."""

    seq_len: int = 256
    batch_size: int = 4
    lr: float = 1e-3
    precision: str = "bf16"
    checkpoint_every: int = 50
    eval_batches: int = 4
    seed: int = 0
    step_scale: float = 1.0


QUICK_REAL_RECIPE = RealRecipe(checkpoint_every=10, eval_batches=2, step_scale=0.1)


@dataclass(frozen=True)
class Run:
    """One trained predictor folder of the run."""

    folder: str
    prune: float
    layer_map: str
    objective: str
    steps: int
    """Each run gets the same CPU budget, 12 minutes: the step count is that budget divided
    by the run's step time, measured on an idle machine (2 cores, AMX, bf16 autocast; see
    docs/kv_prediction.md). Fixed here so that reruns are deterministic and a busy machine
    cannot shrink a run."""

    def steps_for(self, recipe: RealRecipe) -> int:
        return max(1, round(self.steps * recipe.step_scale))


BUDGET_MINUTES = 12.0
RUNS = {
    "kvp025": Run("kvp025-input", 0.25, "input", "kvp", 166),
    "kvp025_block": Run("kvp025-block", 0.25, "block", "kvp", 166),
    "kvp05": Run("kvp050-input", 0.5, "input", "kvp", 145),
    "smaller_model": Run("smaller025", 0.25, "input", "lm", 448),
}
PREDICTED = ("kvp025", "kvp025_block", "kvp05")


def settings_match(training: dict[str, Any], recipe: RealRecipe, run: Run) -> bool:
    """Whether a trained folder (its ``training`` record) was made with this recipe (its
    data path may differ)."""
    recorded = training.get("settings", {})
    if training.get("steps") != run.steps_for(recipe):
        return False
    wanted = {
        "seq_len": recipe.seq_len,
        "batch_size": recipe.batch_size,
        "lr": recipe.lr,
        "precision": recipe.precision,
        "checkpoint_every": recipe.checkpoint_every,
        "eval_batches": recipe.eval_batches,
        "seed": recipe.seed,
        "prune": run.prune,
        "layer_map": run.layer_map,
        "objective": run.objective,
    }
    return all(recorded.get(key) == value for key, value in wanted.items())


def train_or_load(base: Path, root: Path, recipe: RealRecipe) -> tuple[dict[str, Any], Path]:
    """The four predictor folders under ``root``, trained there when missing or different."""
    from amortized.kv_prediction import load_predictor_folder
    from amortized.kv_prediction.training import KVPredictionTrainer, TrainingConfig
    from amortized.testing.text_corpus import write_corpus

    corpus = root / "corpus"
    if not (corpus / "corpus.json").exists():
        write_corpus(corpus)
    folders: dict[str, Any] = {}
    for name, run in RUNS.items():
        out = root / run.folder
        try:
            folder = load_predictor_folder(out)
            if settings_match(folder.config.training, recipe, run):
                folders[name] = folder
                continue
            print(f"{out} was trained with other settings; retraining", file=sys.stderr)
        except Exception:  # missing or partial: train
            pass
        if out.exists():
            import shutil

            shutil.rmtree(out)
        config = TrainingConfig(
            base=str(base),
            data=str(corpus / "train.jsonl"),
            out=str(out),
            prune=run.prune,
            layer_map=run.layer_map,  # type: ignore[arg-type]
            objective=run.objective,  # type: ignore[arg-type]
            seq_len=recipe.seq_len,
            batch_size=recipe.batch_size,
            steps=run.steps_for(recipe),
            lr=recipe.lr,
            precision=recipe.precision,  # type: ignore[arg-type]
            checkpoint_every=recipe.checkpoint_every,
            eval_batches=recipe.eval_batches,
            seed=recipe.seed,
        )
        folders[name] = KVPredictionTrainer(config).train()
    return folders, corpus


# -- quality in transformers -----------------------------------------------------------


def held_out_texts(corpus: Path) -> list[str]:
    return [
        json.loads(line)["text"]
        for line in (corpus / "held_out.jsonl").read_text().split("\n")
        if line
    ]


def passkey_prompt(
    tokenizer: Any, texts: Sequence[str], length: int, rng: random.Random, tag: str = ""
) -> tuple[list[int], str]:
    """Held-out text of about ``length`` tokens with a 5-digit pass key stated once inside
    (10-90% deep), ending in the question; the answer is the key. ``tag`` opens the prompt
    (distinct tags keep prompts from sharing prefix-cache blocks)."""
    key = str(rng.randrange(10_000, 100_000))
    question = "\nWhat is the pass key? The pass key is"
    fact = f"\nThe pass key is {key}. Remember it. {key} is the pass key.\n"
    budget = length - len(tokenizer.encode(tag + fact + question)) - 2
    filler: list[int] = []
    while len(filler) < budget:
        filler += tokenizer.encode(" " + rng.choice(texts))
    filler = filler[:budget]
    at = rng.randrange(len(filler) // 10, len(filler) * 9 // 10)
    text = tag + tokenizer.decode(filler[:at]) + fact + tokenizer.decode(filler[at:]) + question
    return tokenizer.encode(text), key


@dataclass
class QualityModels:
    """Everything the quality half compares, loaded once (fp32, CPU)."""

    base: Any
    runtimes: dict[str, Any]  # predictor name -> KVPredictionRuntime
    smaller: Any

    def auxiliary(self, name: str) -> Any:
        return self.runtimes[name].aux


def load_quality_models(base: Path, folders: dict[str, Any]) -> QualityModels:
    import torch

    from amortized.kv_prediction.runtime import (
        KVPredictionRuntime,
        base_config_of,
        load_hf_model,
    )

    config = base_config_of(base)
    runtimes = {
        name: KVPredictionRuntime(folders[name], config, torch.float32, "cpu") for name in PREDICTED
    }
    smaller = load_hf_model(folders["smaller_model"].aux_path, torch.float32)
    return QualityModels(load_hf_model(base, torch.float32), runtimes, smaller)


def quality_configs(models: QualityModels) -> dict[str, Callable[[list[int]], tuple[Any, Any]]]:
    """Name -> function giving (model, prefix cache or None) for a prompt's token ids."""
    from amortized.kv_prediction.evaluation import predicted_prefix_cache

    configs: dict[str, Callable[[list[int]], tuple[Any, Any]]] = {
        "base": lambda ids: (models.base, None)
    }

    def predicted(runtime: Any) -> Callable[[list[int]], tuple[Any, Any]]:
        return lambda ids: (models.base, predicted_prefix_cache(runtime, ids[:-1]))

    for name in PREDICTED:
        configs[name] = predicted(models.runtimes[name])
    configs["aux_only"] = lambda ids: (models.auxiliary("kvp025"), None)
    configs["aux_only_block"] = lambda ids: (models.auxiliary("kvp025_block"), None)
    configs["aux_only_kvp05"] = lambda ids: (models.auxiliary("kvp05"), None)
    configs["smaller_model"] = lambda ids: (models.smaller, None)
    return configs


def perplexities(
    models: QualityModels, tokenizer: Any, corpus: Path, windows: int, prompt: int, scored: int
) -> dict[str, Any]:
    """Held-out perplexity of ``scored`` tokens after a ``prompt``-token prefix, per config,
    with 95% bootstrap intervals over windows; ``gap_closed`` per predictor (paired)."""
    from tqdm import tqdm

    from amortized.kv_prediction.evaluation import continuation_nll
    from amortized.kv_prediction.training import document_windows, load_documents

    documents = load_documents(corpus / "held_out.jsonl", tokenizer)
    chosen = document_windows(documents, prompt + scored)[:windows]
    configs = quality_configs(models)
    nll: dict[str, list[float]] = {name: [] for name in configs}
    for window in tqdm(chosen, desc="perplexity", file=sys.stderr):
        for name, prepare in configs.items():
            model, cache = prepare(window[:prompt])
            result = continuation_nll(model, window, prompt, cache)
            nll[name].append(result.total / result.tokens)

    def ppl(values: Sequence[float]) -> float:
        return math.exp(sum(values) / len(values))

    out: dict[str, Any] = {
        "windows": len(chosen),
        "prompt_tokens": prompt,
        "scored_tokens": scored,
        "perplexity": {name: ppl(v) for name, v in nll.items()},
        "perplexity_ci95": {
            name: bootstrap_ci([v], lambda s: ppl(s[0])) for name, v in nll.items()
        },
        "gap_closed": {},
        "gap_closed_ci95": {},
    }
    auxiliary = {"kvp025": "aux_only", "kvp025_block": "aux_only_block", "kvp05": "aux_only_kvp05"}
    for name, aux in auxiliary.items():

        def closed(s: Sequence[Sequence[float]]) -> float:
            a, k, b = ppl(s[0]), ppl(s[1]), ppl(s[2])
            return (a - k) / (a - b) if a != b else float("nan")

        paired = [nll[aux], nll[name], nll["base"]]
        out["gap_closed"][name] = closed(paired)
        out["gap_closed_ci95"][name] = bootstrap_ci(paired, closed)
    return out


def retrieval(
    models: QualityModels,
    tokenizer: Any,
    texts: Sequence[str],
    lengths: Sequence[int],
    items: int,
) -> dict[str, Any]:
    """Pass-key accuracy per config and length (greedy, the key must open the answer)."""
    from tqdm import tqdm

    from amortized.kv_prediction.evaluation import greedy_continuation

    configs = quality_configs(models)
    accuracy: dict[str, dict[str, Any]] = {name: {} for name in configs}
    for length in lengths:
        rng = random.Random(f"passkey-{length}")
        prompts = [passkey_prompt(tokenizer, texts, length, rng) for _ in range(items)]
        hits = {name: 0 for name in configs}
        for ids, key in tqdm(prompts, desc=f"pass key @ {length}", file=sys.stderr):
            for name, prepare in configs.items():
                model, cache = prepare(ids)
                answer = tokenizer.decode(greedy_continuation(model, ids, PASSKEY_TOKENS, cache))
                hits[name] += answer.strip().startswith(key)
        for name in configs:
            accuracy[name][str(length)] = {
                "accuracy": hits[name] / items,
                "ci95": wilson(hits[name], items),
                "n": items,
            }
    return accuracy


# -- serving: TTFT, multi-turn, inter-token latency under load ---------------------------


async def stream_times(client: Any, model: str, opt_in: bool, **request: Any) -> list[float]:
    """Arrival times (perf_counter) of every streamed chunk that carries text."""
    body = {"kv_transfer_params": {"kv_prediction": opt_in}}
    times: list[float] = []
    stream = await client.completions.create(model=model, stream=True, extra_body=body, **request)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            times.append(time.perf_counter())
    return times


async def ttft(client: Any, model: str, opt_in: bool, prompt: list[int]) -> float:
    start = time.perf_counter()
    times = await stream_times(client, model, opt_in, prompt=prompt, max_tokens=1, temperature=0)
    return (times[0] - start) * 1000 if times else float("nan")


async def ttft_pairs(
    client: Any, model: str, tokenizer: Any, texts: Sequence[str], length: int, requests: int
) -> dict[str, list[float]]:
    """Base and KVP TTFT on distinct prompts (a unique first line: no prefix-cache hits),
    alternating which goes first."""
    from tqdm import tqdm

    rng = random.Random(f"ttft-{length}")
    samples: dict[str, list[float]] = {"base": [], "kvp025": []}
    for i in tqdm(range(requests + 1), desc=f"TTFT @ {length}", file=sys.stderr):
        order = [("base", False), ("kvp025", True)]
        if i % 2:
            order.reverse()
        for name, opt_in in order:
            prompt, _ = passkey_prompt(tokenizer, texts, length, rng, tag=f"Request {name} {i}.\n")
            value = await ttft(client, model, opt_in, prompt)
            if i:  # the first pair warms up
                samples[name].append(value)
    return samples


async def multi_turn(
    client: Any,
    model: str,
    tokenizer: Any,
    texts: Sequence[str],
    system_tokens: int,
    conversations: int,
    turns: int,
) -> dict[str, Any]:
    """Chats that share one ~1.5k-token system prompt: TTFT per turn, base vs KVP
    conversations alternating. Predicted requests have their own prefix-cache namespace
    (cache_salt), so each side's shared prompt is warmed once first; after that it is a hit
    and the connector computes the short uncached part exactly (policy.worth_predicting)."""
    reference = tokenizer.decode(tokenizer.encode("\n\n".join(texts[:6]))[:system_tokens])
    system = "Answer questions about this reference text.\n\n" + reference
    questions = [
        "What is this text about?",
        "Name one function it mentions.",
        "Summarise the second paragraph.",
        "What would a beginner find hard here?",
    ]
    for opt_in in (False, True):  # warm the shared prefix in both cache namespaces
        await client.chat.completions.create(
            model=model,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": "Hi"}],
            max_tokens=1,
            extra_body={"kv_transfer_params": {"kv_prediction": opt_in}},
        )
    per_turn: dict[str, list[list[float]]] = {
        "base": [[] for _ in range(turns)],
        "kvp025": [[] for _ in range(turns)],
    }
    for c in range(conversations):
        name, opt_in = ("kvp025", True) if c % 2 else ("base", False)
        messages = [{"role": "system", "content": system}]
        for turn in range(turns):
            messages.append(
                {"role": "user", "content": f"({c}.{turn}) {questions[turn % len(questions)]}"}
            )
            start = time.perf_counter()
            stream = await client.chat.completions.create(
                model=model,
                messages=messages,
                max_tokens=24,
                temperature=0,
                stream=True,
                extra_body={"kv_transfer_params": {"kv_prediction": opt_in}},
            )
            first, reply = float("nan"), []
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    if first != first:
                        first = (time.perf_counter() - start) * 1000
                    reply.append(chunk.choices[0].delta.content)
            per_turn[name][turn].append(first)
            messages.append({"role": "assistant", "content": "".join(reply)})
    medians = {name: [median(t) for t in turns_] for name, turns_ in per_turn.items()}
    return {
        "system_prompt_tokens": system_tokens,
        "conversations": conversations,
        "turns": turns,
        "ttft_median_ms_by_turn": medians,
        "ttft_ratio_by_turn": [
            k / b for k, b in zip(medians["kvp025"], medians["base"], strict=True)
        ],
    }


async def _decode(client: Any, model: str, times: list[float], max_tokens: int) -> None:
    """A long greedy decode (exact prefill: its prompt is short); appends chunk times."""
    stream = await client.completions.create(
        model=model,
        prompt="Count from one to one thousand in words: one, two, three,",
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        extra_body={"kv_transfer_params": {"kv_prediction": False}, "ignore_eos": True},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            times.append(time.perf_counter())


async def itl_under_load(
    client: Any,
    model: str,
    tokenizer: Any,
    texts: Sequence[str],
    length: int,
    rounds: int,
    prompts_per_round: int,
) -> dict[str, Any]:
    """Inter-token latency of a running decode while ``length``-token prompts arrive one
    after another, predicted (KVP) or computed by the base; ABBA rounds."""
    rng = random.Random(f"itl-{length}")
    gaps: dict[str, list[list[float]]] = {"base": [], "kvp025": []}
    from tqdm import tqdm

    pairs = [("base", "kvp025"), ("kvp025", "base")]
    order = [name for r in range(rounds) for name in pairs[r % 2]]

    for round_index, name in enumerate(
        tqdm(order, desc=f"ITL under {length}-token load", file=sys.stderr)
    ):
        loads = [
            passkey_prompt(tokenizer, texts, length, rng, tag=f"Load {round_index} {i}.\n")[0]
            for i in range(prompts_per_round)
        ]
        times: list[float] = []
        decode = asyncio.create_task(_decode(client, model, times, length))
        while len(times) < 8 and not decode.done():  # the decode is running
            await asyncio.sleep(0.05)
        window_start = time.perf_counter()
        for prompt in loads:
            await ttft(client, model, name == "kvp025", prompt)
        window_end = time.perf_counter()
        decode.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await decode
        inside = [b - a for a, b in itertools.pairwise(times) if window_start <= b <= window_end]
        gaps[name].append([g * 1000 for g in inside])
    means = {
        name: [sum(r) / len(r) if r else float("nan") for r in rs] for name, rs in gaps.items()
    }
    ratios = [k / b for k, b in zip(means["kvp025"], means["base"], strict=True)]
    return {
        "prompt_tokens": length,
        "rounds": rounds,
        "prompts_per_round": prompts_per_round,
        "itl_mean_ms_by_round": means,
        "itl_ratio_by_round": ratios,
        "itl_ratio_under_load": median(ratios),
        "itl_ratio_range": [min(ratios), max(ratios)],
        "tokens_measured": {name: sum(len(r) for r in rs) for name, rs in gaps.items()},
    }


def serve_and_measure(
    base: Path,
    predictor: Path,
    logs: Path,
    tokenizer: Any,
    texts: Sequence[str],
    lengths: Sequence[int],
    requests: int,
    itl_rounds: int,
) -> dict[str, Any]:
    """One server (base + KVP-0.25, prefix caching on): TTFT, multi-turn, ITL under load."""
    import openai

    from amortized.serving.process import ServerProcess, free_port

    port = free_port()
    argv = [sys.executable, "-m", "amortized", "serve", str(base), "--kv-predictor"]
    argv += [str(predictor), "--port", str(port)]
    options = ["--dtype", "float32", "--max-model-len", str(max(lengths) + 64)]
    options += ["--served-model-name", "m"]  # prefix caching stays on: vLLM's default

    async def measure(base_url: str) -> dict[str, Any]:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="none", timeout=600)
        ttft_ms = {}
        for length in lengths:
            ttft_ms[str(length)] = await ttft_pairs(client, "m", tokenizer, texts, length, requests)
        system_tokens = min(1500, max(lengths) - 400)
        conversations = max(4, requests // 2)
        chat = await multi_turn(
            client, "m", tokenizer, texts, system_tokens, conversations=conversations, turns=3
        )
        itl = await itl_under_load(
            client, "m", tokenizer, texts, max(lengths), itl_rounds, prompts_per_round=3
        )
        await client.close()
        return {"ttft_ms": ttft_ms, "multi_turn": chat, "itl": itl}

    logs.mkdir(parents=True, exist_ok=True)
    with ServerProcess([*argv, "--", *options], port, logs / "real-kvp025.log") as process:
        return asyncio.run(measure(process.base_url))


def ttft_summary(samples: dict[str, list[float]]) -> dict[str, Any]:
    """Median TTFT per side and the ratio of medians with a paired bootstrap interval."""

    def ratio(columns: Sequence[Sequence[float]]) -> float:
        return median(columns[1]) / median(columns[0])

    columns = [samples["base"], samples["kvp025"]]
    return {
        "base_median_ms": median(samples["base"]),
        "kvp025_median_ms": median(samples["kvp025"]),
        "ratio": ratio(columns),
        "ratio_ci95": bootstrap_ci(columns, ratio),
        "n": len(samples["base"]),
    }


def describe_folders(folders: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, folder in folders.items():
        training = folder.config.training
        history = training.get("history") or [{}]
        out[name] = {
            "folder": str(folder.path),
            "auxiliary": folder.config.aux.origin,
            "objective": training.get("settings", {}).get("objective", "kvp"),
            "steps": training.get("steps"),
            "train_seconds": training.get("train_seconds"),
            "data": training.get("settings", {}).get("data"),
            "first_eval": history[0],
            "last_eval": history[-1],
        }
    return out


def run_real_model(
    base: Path,
    root: Path,
    recipe: RealRecipe,
    quick: bool,
    requests: int | None,
    items: int | None,
) -> dict[str, Any]:
    """Train (or load) the predictors, measure quality and serving; the ``real_model`` block
    and the full record."""
    from transformers import AutoTokenizer

    folders, corpus = train_or_load(base, root, recipe)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    tokenizer.model_max_length = 1 << 62
    texts = held_out_texts(corpus)
    lengths = (2048,) if quick else REAL_LENGTHS
    models = load_quality_models(base, folders)
    ppl = perplexities(
        models, tokenizer, corpus, windows=24 if quick else 64, prompt=512, scored=128
    )
    passkey = retrieval(models, tokenizer, texts, lengths, items or (16 if quick else 30))
    del models
    served = serve_and_measure(
        base,
        folders["kvp025"].path,
        root / "logs",
        tokenizer,
        texts,
        lengths,
        requests or (8 if quick else 20),
        itl_rounds=2 if quick else 4,
    )
    ttft = {length: ttft_summary(s) for length, s in served["ttft_ms"].items()}
    names = ("base", "kvp025", "aux_only", "smaller_model")
    block = {
        "ttft_ratio_kvp025_vs_base": {n: t["ratio"] for n, t in ttft.items()},
        "ttft_ratio_ci95": {n: t["ratio_ci95"] for n, t in ttft.items()},
        "ttft_median_ms": {
            n: {k: t[f"{k}_median_ms"] for k in ("base", "kvp025")} for n, t in ttft.items()
        },
        "ttft_requests_per_side": next(iter(ttft.values()))["n"],
        "perplexity": {n: ppl["perplexity"][n] for n in names},
        "perplexity_all": ppl["perplexity"],
        "perplexity_ci95": ppl["perplexity_ci95"],
        "perplexity_setup": {k: ppl[k] for k in ("windows", "prompt_tokens", "scored_tokens")},
        "gap_closed_kvp025": ppl["gap_closed"]["kvp025"],
        "gap_closed": ppl["gap_closed"],
        "gap_closed_ci95": ppl["gap_closed_ci95"],
        "retrieval_accuracy": passkey,
        "itl_ratio_under_load": served["itl"]["itl_ratio_under_load"],
        "itl": served["itl"],
        "multi_turn": served["multi_turn"],
        "prefix_caching": True,
        "training": {"recipe": asdict(recipe), "runs": describe_folders(folders)},
        "corpus": {
            k: v
            for k, v in json.loads((corpus / "corpus.json").read_text()).items()
            if k != "held_out_modules"
        },
    }
    return block
