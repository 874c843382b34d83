"""KV-prediction prefill: TTFT and answer quality of base, KVP-0.25, KVP-0.5 and aux alone.

The task is pattern continuation, where the answer depends on prompt content: lines of a
random segment repeated four times, and a question that breaks off inside the third repeat;
the answer is the segment's next two words. The base is grown from a 2-layer model that
learns the copying circuit in about a minute (G_stack), then trained at 512 tokens. All
models are built by this script (cached by recipe fingerprint) and served by real vLLM
servers; TTFT is measured through the OpenAI API, interleaving configurations per request.

    python -m benchmarks.kv_prediction [--quick] [--json out.json] [--plot out.png]
"""

import asyncio
import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from amortized.kv_prediction.training import (
    LAYER_ALIGNMENTS,
    KVPredictionTrainer,
    LayerAlignment,
    TrainingConfig,
)
from amortized.models.shape import ModelShape
from benchmarks._harness import base_parser, median, model_folder, print_table, write_json

PROMPT_LENGTHS = (512, 2048, 4096)
CONFIGS = ("base", "kvp025", "kvp05", "aux_only")
RATIO_REFERENCE = {"base": "base", "kvp025": "base", "kvp05": "base_b", "aux_only": "base"}
"""Each TTFT ratio's denominator: the base on the same server where there is one."""


@dataclass(frozen=True)
class CopyTask:
    """Pattern continuation: a random segment of value words repeats; continue it.

    A document is ``; s ; s ; s ; s ;`` for a random segment ``s`` of 4-10 words, one per
    line. A question is a stream of such lines, then ``; s ; s ; s[:k]``: the answer is the
    next two words of ``s``, which only the prompt holds (an induction-style lookup). Plain
    repeats with no filler between them are what let the copying circuit appear within a
    few hundred steps on 2 CPU cores; with filler words mixed in it took thousands.
    """

    values: int = 32
    repeats: int = 4
    shortest: int = 4
    longest: int = 10

    @staticmethod
    def word(prefix: str, index: int) -> str:
        """Letters only (byte-level BPE splits digits off), e.g. ``vbd`` for value 19."""
        letters = "abcdefghijklmnop"
        return prefix + letters[index // 16] + letters[index % 16]

    def words(self) -> list[str]:
        """Every word of the task's language (each becomes one token)."""
        return [*(self.word("v", i) for i in range(self.values)), ";"]

    def segment(self, rng: random.Random, shortest: int | None = None) -> list[str]:
        length = rng.randint(shortest or self.shortest, self.longest)
        return [self.word("v", rng.randrange(self.values)) for _ in range(length)]

    def training_sample(self, rng: random.Random) -> str:
        """One line: ``; s ; s ; s ; s ;``."""
        segment = self.segment(rng)
        return " ".join([";", *(w for _ in range(self.repeats) for w in [*segment, ";"])])

    def question(self, rng: random.Random) -> tuple[str, list[str]]:
        """``; s ; s ; s[:k]`` and the two words that continue it."""
        segment = self.segment(rng, shortest=6)
        k = rng.randrange(1, len(segment) - 2)
        return " ".join([";", *segment, ";", *segment, ";", *segment[:k]]), segment[k : k + 2]


@dataclass(frozen=True)
class BenchRecipe:
    """Everything that determines the cached models; its fingerprint names the cache."""

    task: CopyTask = field(default_factory=CopyTask)
    shape: ModelShape = field(
        default_factory=lambda: ModelShape(
            hidden_size=256,
            num_layers=8,
            num_heads=4,
            num_kv_heads=2,
            intermediate_size=704,
            max_position_embeddings=8192,
        )
    )
    train_samples: int = 20000
    small_layers: int = 2
    small_steps: int = 500
    small_batch: int = 16
    small_seq_len: int = 128
    small_lr: float = 1e-3
    base_steps: int = 250
    base_batch: int = 4
    base_lr: float = 5e-4
    base_warmup: int = 20
    seq_len: int = 512
    kvp_steps: int = 120
    kvp_batch: int = 4
    kvp_lr: float = 1e-3
    seed: int = 0
    version: int = 4

    def fingerprint(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]


QUICK_RECIPE = BenchRecipe(small_steps=400, base_steps=120, kvp_steps=60)


def build_models(recipe: BenchRecipe, root: Path, layer_map: LayerAlignment) -> dict[str, Any]:
    """Train (or load from ``root``) the base model and the 0.25 / 0.5 predictors.

    The predictors' folders are named by layer map, so either map reuses the cached base.
    """
    import torch

    from amortized.kv_prediction import load_predictor_folder
    from amortized.models.folder import ensure_folder, validate_model_folder, write_manifest
    from amortized.models.shape import save_model_folder
    from amortized.models.tokenizer import train_tokenizer
    from amortized.models.training import (
        grow_by_stacking,
        train_causal_lm,
        warmup_cosine_lr,
    )

    rng = random.Random(recipe.seed)
    samples = [recipe.task.training_sample(rng) for _ in range(recipe.train_samples)]
    data = root / "train.txt"

    def build_base(out: Path) -> None:
        start = time.perf_counter()
        torch.set_num_threads(os.cpu_count() or 1)
        tokenizer = train_tokenizer(samples[:2000] + [" ".join(recipe.task.words())] * 50, 768)
        for word in recipe.task.words():
            if len(tokenizer.encode(" " + word)) != 1:
                raise RuntimeError(f"task word {word!r} is not one token")
        stream = torch.tensor(
            [t for s in samples for t in tokenizer.encode(s + "\n")], dtype=torch.long
        )
        small = replace(recipe.shape, num_layers=recipe.small_layers).new_model(
            tokenizer, recipe.seed
        )
        small_losses = train_causal_lm(
            small,
            stream,
            steps=recipe.small_steps,
            batch_size=recipe.small_batch,
            seq_len=recipe.small_seq_len,
            lr_at=lambda step: warmup_cosine_lr(step, recipe.small_lr, 50, recipe.small_steps),
            seed=recipe.seed,
            desc=f"train {recipe.small_layers}-layer seed model",
            weight_decay=0.0,
        )
        model = recipe.shape.new_model(tokenizer, recipe.seed)
        grow_by_stacking(small, model)
        losses = train_causal_lm(
            model,
            stream,
            steps=recipe.base_steps,
            batch_size=recipe.base_batch,
            seq_len=recipe.seq_len,
            lr_at=lambda step: warmup_cosine_lr(
                step, recipe.base_lr, recipe.base_warmup, recipe.base_steps
            ),
            seed=recipe.seed + 1,
            desc="train base (stacked)",
            weight_decay=0.0,
        )
        save_model_folder(model, tokenizer, out, recipe.shape)
        write_manifest(
            out,
            {
                "kind": "bench-kvp-base",
                "recipe": asdict(recipe),
                "seconds": time.perf_counter() - start,
                "seed_model_final_loss": small_losses[-1],
                "final_loss": losses[-1],
            },
        )

    root.mkdir(parents=True, exist_ok=True)
    data.write_text("\n".join(samples) + "\n")
    base = ensure_folder(root / "base", build_base)
    predictors = {}
    for name, fraction in (("kvp025", 0.25), ("kvp05", 0.5)):
        out = root / f"{name}-{layer_map}"
        try:
            predictors[name] = load_predictor_folder(out)
            continue
        except Exception:  # missing or partial: (re)train
            pass
        config = TrainingConfig(
            base=str(base.path),
            data=str(data),
            out=str(out),
            prune=fraction,
            layer_map=layer_map,
            seq_len=recipe.seq_len,
            batch_size=recipe.kvp_batch,
            steps=recipe.kvp_steps,
            lr=recipe.kvp_lr,
            checkpoint_every=max(1, recipe.kvp_steps // 2),
            eval_batches=2,
            min_prompt_tokens=256,
            seed=recipe.seed,
        )
        start = time.perf_counter()
        folder = KVPredictionTrainer(config).train(resume=(out / "checkpoint.pt").exists())
        history = folder.config.training
        history["seconds"] = time.perf_counter() - start
        (out / "kv_predictor.json").write_text(folder.config.model_dump_json(indent=2))
        predictors[name] = load_predictor_folder(out)
    validate_model_folder(base.path)
    return {"base": base, **predictors}


def describe_training(models: dict[str, Any]) -> dict[str, Any]:
    """Which models were trained, on what, for how long (printed and saved)."""
    manifest = models["base"].manifest or {}
    built = manifest.get("recipe", {})
    recipe = built.get("recipe", {})
    if built.get("kind") != "bench-kvp-base":
        described: dict[str, Any] = {
            "base": {"trained": False, "model": str(models["base"].path), "built": built}
        }
    else:
        described = {
            "base": {
                "trained": True,
                "how": (
                    f"{recipe.get('small_steps')} steps of a {recipe.get('small_layers')}-layer "
                    f"model, its layers repeated to {recipe.get('shape', {}).get('num_layers')} "
                    f"(G_stack), then {recipe.get('base_steps')} steps at "
                    f"{recipe.get('seq_len')} tokens"
                ),
                "seconds": built.get("seconds"),
                "seed_model_final_loss": built.get("seed_model_final_loss"),
                "final_loss": built.get("final_loss"),
            }
        }
    for name in ("kvp025", "kvp05"):
        training = models[name].config.training
        described[name] = {
            "trained": True,
            "auxiliary": models[name].config.aux.origin,
            "steps": training.get("steps"),
            "seconds": training.get("seconds"),
            "last_eval": (training.get("history") or [None])[-1],
        }
    described["aux_only"] = {"trained": True, "note": "the KVP-0.25 auxiliary model, served alone"}
    return described


# -- measurement -------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    base_url: str
    model: str
    opt_in: bool | None


def make_prompt(
    task: CopyTask, tokenizer: Any, length: int, rng: random.Random
) -> tuple[list[int], list[int]]:
    """Token ids of exactly ``length`` (earlier task lines first), and the answer's ids."""
    question, answer = task.question(rng)
    tail = tokenizer.encode(question)
    lines: list[int] = []
    while len(lines) + len(tail) < length:
        lines += tokenizer.encode(task.training_sample(rng) + "\n")
    prompt = (lines + tail)[-length:]
    return prompt, tokenizer.encode(" " + " ".join(answer))


def extra(server: Server) -> dict[str, Any]:
    if server.opt_in is None:
        return {}
    return {"extra_body": {"kv_transfer_params": {"kv_prediction": server.opt_in}}}


async def ttft_ms(client: Any, server: Server, prompt: list[int]) -> float:
    start = time.perf_counter()
    stream = await client.completions.create(
        model=server.model,
        prompt=prompt,
        max_tokens=1,
        temperature=0,
        stream=True,
        **extra(server),
    )
    first = math.nan
    async for chunk in stream:
        if math.isnan(first) and chunk.choices:
            first = (time.perf_counter() - start) * 1000
    return first


async def answer_quality(
    client: Any, server: Server, prompt: list[int], answer: list[int], texts: list[str]
) -> tuple[bool, float]:
    """Greedy exact match and mean log-likelihood of the answer (teacher-forced)."""
    hit, total = True, 0.0
    for i, token in enumerate(answer):
        reply = await client.completions.create(
            model=server.model,
            prompt=prompt + answer[:i],
            max_tokens=1,
            temperature=0,
            logprobs=len(texts),
            **extra(server),
        )
        content = reply.choices[0].logprobs
        top = content.top_logprobs[0]
        want = texts[token]
        total += float(top.get(want, min(top.values())))
        hit = hit and content.tokens[0] == want
    return hit, total / len(answer)


async def measure(
    servers: dict[str, Server],
    quality_for: tuple[str, ...],
    recipe: BenchRecipe,
    tokenizer: Any,
    lengths: tuple[int, ...],
    requests: int,
    quality_items: int,
) -> dict[str, Any]:
    """TTFT samples and quality of configurations on one server, interleaved per request."""
    import openai
    from tqdm import tqdm

    client = openai.AsyncOpenAI(base_url=next(iter(servers.values())).base_url, api_key="none")
    clients = {name: client.with_options(base_url=s.base_url) for name, s in servers.items()}
    # Token texts as vLLM returns them, to find the answer among the top logprobs.
    texts = [
        str(tokenizer.convert_ids_to_tokens(t)).replace("Ġ", " ") for t in range(len(tokenizer))
    ]
    ttft: dict[str, dict[str, list[float]]] = {n: {} for n in servers}
    quality: dict[str, dict[str, dict[str, float]]] = {n: {} for n in servers}
    for length in lengths:
        rng = random.Random(length)
        prompts = [make_prompt(recipe.task, tokenizer, length, rng) for _ in range(requests + 2)]
        for name, server in servers.items():  # warm-up
            for prompt, _ in prompts[:2]:
                await ttft_ms(clients[name], server, prompt)
        samples: dict[str, list[float]] = {n: [] for n in servers}
        for prompt, _ in tqdm(prompts[2:], desc=f"TTFT @ {length}", file=sys.stderr):
            for name, server in servers.items():
                samples[name].append(await ttft_ms(clients[name], server, prompt))
        for name in servers:
            ttft[name][str(length)] = samples[name]
        rng = random.Random(10_000 + length)
        items = [make_prompt(recipe.task, tokenizer, length, rng) for _ in range(quality_items)]
        for name in quality_for:
            server = servers[name]
            hits, lls = 0, []
            for prompt, answer in tqdm(items, desc=f"quality {name} @ {length}", file=sys.stderr):
                hit, ll = await answer_quality(clients[name], server, prompt, answer, texts)
                hits += hit
                lls.append(ll)
            quality[name][str(length)] = {
                "exact_match": hits / len(items),
                "mean_loglik": sum(lls) / len(lls),
            }
    await client.close()
    return {"ttft_ms": ttft, "quality": quality}


@dataclass(frozen=True)
class Phase:
    """One server and the configurations measured on it, side by side."""

    server_args: list[str]
    configs: dict[str, bool | None]  # name -> kv_prediction opt-in (None: no connector)
    quality_for: tuple[str, ...]


def phases(models: dict[str, Any]) -> list[Phase]:
    """Servers run one at a time: on 2 cores, idle servers beside the measured one cost
    up to ~0.8 s per request and made ratios meaningless. Each KVP ratio is against the
    base on the same server (opt-out requests), interleaved request by request."""
    base = str(models["base"].path)
    return [
        Phase(
            [base, "--kv-predictor", str(models["kvp025"].path)],
            {"base": False, "kvp025": True},
            ("base", "kvp025"),
        ),
        Phase(
            [base, "--kv-predictor", str(models["kvp05"].path)],
            {"base_b": False, "kvp05": True},
            ("kvp05",),
        ),
        Phase([str(models["kvp025"].aux_path)], {"aux_only": None}, ("aux_only",)),
    ]


def run_phase(
    phase: Phase, logs: Path, max_len: int, measure_args: tuple[Any, ...]
) -> dict[str, Any]:
    """Start the phase's server, measure, stop it."""
    from amortized.serving.process import ServerProcess, free_port

    common = ["--dtype", "float32", "--max-model-len", str(max_len)]
    common += ["--no-enable-prefix-caching", "--max-logprobs", "1000", "--served-model-name", "m"]
    port = free_port()
    argv = [sys.executable, "-m", "amortized", "serve", *phase.server_args, "--port", str(port)]
    name = "-".join(phase.configs)
    with ServerProcess([*argv, "--", *common], port, logs / f"{name}.log") as process:
        servers = {n: Server(n, process.base_url, "m", flag) for n, flag in phase.configs.items()}
        return asyncio.run(measure(servers, phase.quality_for, *measure_args))


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    lengths = result["lengths"]
    for name in CONFIGS:
        medians = [result["ttft_median_ms"][name][str(n)] for n in lengths]
        axes[0].plot(lengths, medians, marker="o", label=name)
    axes[0].set_xlabel("prompt tokens")
    axes[0].set_ylabel("median TTFT (ms)")
    axes[0].set_title("Time to first token")
    axes[0].legend()
    ref = str(result["summary"]["quality_length"])
    for name in CONFIGS:
        x = result["ttft_median_ms"][name][ref]
        y = result["summary"]["quality"][name]
        axes[1].scatter([x], [y], s=60)
        axes[1].annotate(name, (x, y), textcoords="offset points", xytext=(6, 4))
    axes[1].set_xlabel(f"median TTFT at {ref} tokens (ms)")
    axes[1].set_ylabel("exact match")
    axes[1].set_title(f"TTFT vs quality at {ref} tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--requests", type=int, default=None, help="TTFT requests per config and length (20)"
    )
    parser.add_argument(
        "--quality-items", type=int, default=None, help="questions per config and length"
    )
    parser.add_argument("--cache-dir", help="where the trained models are kept")
    parser.add_argument(
        "--model",
        help="a real base model by name (amortized models list, e.g. smollm2-135m-instruct) "
        "or folder: predictors are trained for it on real text and the real_model block is "
        "measured (default: the grown toy base on the copy task)",
    )
    parser.add_argument(
        "--predictors",
        type=Path,
        help="with --model: folder of the trained predictors (trained there when missing)",
    )
    parser.add_argument(
        "--layer-map",
        choices=LAYER_ALIGNMENTS,
        default="input",
        help="the pruned predictors' layer map ('block' is the paper's i//4)",
    )
    args = parser.parse_args(argv)
    if args.model:
        return main_real_model(args)
    from amortized.config import models_dir

    prefix = "bench-kvp-"
    full = BenchRecipe()
    root_full = models_dir(args.cache_dir) / f"{prefix}{full.fingerprint()}"
    recipe = full
    if args.quick and not (root_full / f"kvp05-{args.layer_map}" / "kv_predictor.json").exists():
        recipe = QUICK_RECIPE
    root = models_dir(args.cache_dir) / f"{prefix}{recipe.fingerprint()}"
    lengths = (2048,) if args.quick else PROMPT_LENGTHS
    requests = args.requests or 20
    quality_items = args.quality_items or (20 if args.quick else 40)
    quality_length = lengths[0]

    build_start = time.perf_counter()
    models = build_models(recipe, root, args.layer_map)
    build_seconds = time.perf_counter() - build_start
    training = describe_training(models)
    print(
        f"models in {root} ({'built' if build_seconds > 60 else 'cached'}, {build_seconds:.0f} s):"
    )
    for name, info in training.items():
        print(f"  {name}: {json.dumps(info)}")

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(models["base"].path))
    raw: dict[str, Any] = {"ttft_ms": {}, "quality": {}}
    measure_args = (recipe, tokenizer, lengths, requests, quality_items)
    for phase in phases(models):
        part = run_phase(phase, root / "logs", max(lengths) + 64, measure_args)
        raw["ttft_ms"].update(part["ttft_ms"])
        raw["quality"].update({k: v for k, v in part["quality"].items() if v})
    medians = {name: {n: median(v) for n, v in per.items()} for name, per in raw["ttft_ms"].items()}
    ratio = {n: medians["kvp025"][n] / medians["base"][n] for n in map(str, lengths)}
    ratio05 = {n: medians["kvp05"][n] / medians["base_b"][n] for n in map(str, lengths)}
    ref = str(quality_length)
    q = {name: raw["quality"][name][ref]["exact_match"] for name in CONFIGS}
    gap = q["base"] - q["aux_only"]
    result = {
        "summary": {
            "ttft_ratio_kvp025_vs_base": ratio,
            "ttft_ratio_kvp05_vs_base": ratio05,
            "quality": q,
            "quality_metric": f"exact match of the 2-token answer (greedy) at {ref} prompt tokens",
            "quality_length": quality_length,
            "layer_map": args.layer_map,
            "mean_loglik": {n: raw["quality"][n][ref]["mean_loglik"] for n in CONFIGS},
            "kvp025_vs_aux_relative": (q["kvp025"] / q["aux_only"] - 1) if q["aux_only"] else None,
            "kvp025_gap_closed": ((q["kvp025"] - q["aux_only"]) / gap) if gap else None,
        },
        "lengths": list(lengths),
        "ttft_median_ms": medians,
        "ttft_ms": raw["ttft_ms"],
        "quality_by_length": raw["quality"],
        "models": training,
        "recipe": asdict(recipe),
        "requests_per_point": requests,
        "quality_items": quality_items,
        "machine": {"cpus": os.cpu_count()},
    }
    rows = []
    for name in CONFIGS:
        row: list[Any] = [name]
        row += [medians[name][str(n)] for n in lengths]
        reference = medians[RATIO_REFERENCE[name]]
        row += [medians[name][str(n)] / reference[str(n)] for n in lengths]
        row += [raw["quality"][name][ref]["exact_match"], raw["quality"][name][ref]["mean_loglik"]]
        rows.append(row)
    headers = [
        "config",
        *(f"TTFT@{n} ms" for n in lengths),
        *(f"ratio@{n}" for n in lengths),
        f"EM@{ref}",
        f"loglik@{ref}",
    ]
    print_table(headers, rows)
    print(
        "ratios: kvp025 vs base and kvp05 vs base on their own servers (interleaved); "
        "aux_only (its own server) vs the base of the kvp025 server"
    )
    if len(lengths) > 1:
        print("quality by length (exact match):")
        print_table(
            ["config", *map(str, lengths)],
            [[n, *(raw["quality"][n][str(L)]["exact_match"] for L in lengths)] for n in CONFIGS],
        )
    print(json.dumps(result["summary"], indent=2))
    write_json(args.json, result)
    plot(result, args.plot or Path(f"kv_prediction{'-quick' if args.quick else ''}.png"))
    return 0


def main_real_model(args: Any) -> int:
    """``--model``: the real-model run (benchmarks/_kvp_real.py); tables, JSON, plot."""
    from amortized.config import models_dir
    from benchmarks._kvp_real import QUICK_REAL_RECIPE, RUNS, RealRecipe, run_real_model

    base = model_folder(args.model, args.cache_dir)

    def root_of(recipe: RealRecipe) -> Path:
        digest = hashlib.sha256(json.dumps(asdict(recipe)).encode()).hexdigest()[:10]
        return (
            args.predictors or models_dir(args.cache_dir) / f"bench-kvp-real-{base.name}-{digest}"
        )

    recipe = RealRecipe()
    if args.quick and not all(
        (root_of(recipe) / run.folder / "kv_predictor.json").exists() for run in RUNS.values()
    ):
        recipe = QUICK_REAL_RECIPE  # minutes, not the full run's ~50 of training
    block = run_real_model(
        base, root_of(recipe), recipe, args.quick, args.requests, args.quality_items
    )
    lengths = list(block["ttft_ratio_kvp025_vs_base"])
    longest = lengths[-1]
    accuracy = block["retrieval_accuracy"]
    print("held-out perplexity (512-token prompt, next 128 tokens scored):")
    print_table(
        ["config", "perplexity", "95% CI", "gap closed", "gap 95% CI"],
        [
            [
                name,
                value,
                "{:.2f}-{:.2f}".format(*block["perplexity_ci95"][name]),
                block["gap_closed"].get(name, ""),
                "{:.2f}-{:.2f}".format(*block["gap_closed_ci95"][name])
                if name in block["gap_closed_ci95"]
                else "",
            ]
            for name, value in block["perplexity_all"].items()
        ],
    )
    print("pass-key retrieval accuracy (greedy):")
    print_table(
        ["config", *(f"acc@{n}" for n in accuracy["base"])],
        [[name, *(v["accuracy"] for v in per.values())] for name, per in accuracy.items()],
    )
    print("TTFT on one server, prefix caching on (distinct prompts, interleaved):")
    print_table(
        ["tokens", "base ms", "kvp025 ms", "ratio", "95% CI"],
        [
            [
                n,
                block["ttft_median_ms"][n]["base"],
                block["ttft_median_ms"][n]["kvp025"],
                block["ttft_ratio_kvp025_vs_base"][n],
                "{:.2f}-{:.2f}".format(*block["ttft_ratio_ci95"][n]),
            ]
            for n in lengths
        ],
    )
    chat = block["multi_turn"]
    print(f"multi-turn chat, shared system prompt: TTFT ratio by turn {chat['ttft_ratio_by_turn']}")
    itl = block["itl"]
    print(
        f"ITL of a running decode while {itl['prompt_tokens']}-token prompts arrive: KVP/base "
        f"{itl['itl_ratio_under_load']:.2f} (rounds {itl['itl_ratio_by_round']})"
    )
    result = {
        "summary": {
            "ttft_ratio_kvp025_vs_base": block["ttft_ratio_kvp025_vs_base"],
            "quality": {
                name: accuracy[name][longest]["accuracy"]
                for name in ("base", "kvp025", "kvp05", "aux_only")
            },
            "quality_metric": f"pass-key retrieval accuracy (greedy) at {longest} prompt tokens",
            "quality_length": int(longest),
            "layer_map": "input",
        },
        "real_model": block,
        "model": str(base),
        "machine": {"cpus": os.cpu_count()},
    }
    write_json(args.json, result)
    plot_real(block, args.plot or Path(f"kv_prediction-real{'-quick' if args.quick else ''}.png"))
    return 0


def plot_real(block: dict[str, Any], path: Path) -> None:
    """Perplexity per config beside pass-key accuracy by prompt length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    names = list(block["perplexity_all"])
    values = [block["perplexity_all"][n] for n in names]
    low = [v - block["perplexity_ci95"][n][0] for n, v in zip(names, values, strict=True)]
    high = [block["perplexity_ci95"][n][1] - v for n, v in zip(names, values, strict=True)]
    axes[0].barh(names, values, xerr=[low, high])
    axes[0].set_xscale("log")
    axes[0].set_xlabel("held-out perplexity (log scale, 95% CI)")
    for name, per in block["retrieval_accuracy"].items():
        lengths = [int(n) for n in per]
        axes[1].plot(lengths, [v["accuracy"] for v in per.values()], marker="o", label=name)
    axes[1].set_xlabel("prompt tokens")
    axes[1].set_ylabel("pass-key accuracy")
    axes[1].legend(fontsize=7)
    fig.suptitle("KV prediction on a real model: quality")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
