"""Serving overhead: plain ``vllm serve`` against ``amortized serve`` with every capability on.

Both sides serve the same model folder with the same vLLM options and environment: the
options ``amortized serve`` adds (dtype, chat template, compact structured outputs, eager
mode, KV-cache size, block size 32, max-model-len) are worked out once by its own
``plan_launch`` and handed to ``vllm serve`` too, and the two servers' logged
``non-default args`` must match. The only difference is the amortized plugin: the plain side
runs with ``VLLM_PLUGINS`` naming every general plugin except amortized, the amortized side
with ``AMORTIZED_CAPABILITIES=all`` (routes, the KV-prediction request middleware in front of
the completion routes, the general plugin in every engine process). Each server's
``/openapi.json`` is checked: no ``/v1/amortized`` route on the plain side, all of them (and
every capability in ``/v1/amortized/info``) on the other. No ``--kv-predictor`` is given, so
requests take vLLM's own prefill, as on any server started without one; what a predictor
costs and saves is ``benchmarks/kv_prediction.py``'s subject.

Load comes from vLLM's own ``vllm bench serve`` (random token prompts, fixed seed, fixed
output length with ``--ignore-eos``, tokenizer from the local model folder, no hub access):
one serial run (``--max-concurrency 1``) and one concurrent run per server start.

One server at a time, each round a fresh start of both, in ABBA order (plain first in even
rounds, amortized first in odd ones): on 2 cores even an idle second vLLM (its API server's
timers, its OpenMP threads spinning after each step, its memory) competes with the one being
measured, and a persistent pair would let one lucky or unlucky start bias every round;
fresh starts sample that start-to-start variance on both sides alike, and ABBA cancels
linear drift from other work on the machine. Ratios are amortized / plain per round (a
throughput ratio above 1, or a latency ratio below 1, favours amortized); the figures are
medians of the per-round ratios and ``spread`` is the widest max - min of them.

    python -m benchmarks.overhead [--quick] [--json out.json] [--plot out.png] [--model NAME]
"""

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from amortized.serving.launcher import LaunchPlan
from amortized.serving.paths import ROUTE_PREFIX
from benchmarks._harness import base_parser, median, print_table, write_json

SIDES = ("plain", "amortized")
MODES = ("serial", "concurrent")
METRICS = ("throughput", "ttft", "itl")
"""Output tokens/s, median time to first token (ms), median inter-token latency (ms)."""
BENCH_KEYS = {"throughput": "output_throughput", "ttft": "median_ttft_ms", "itl": "median_itl_ms"}
SERVER_OPTIONS = ("--block-size", "32")
"""As ``_harness.served_model``: the block size the prefix-cache capabilities use."""
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@dataclass(frozen=True)
class Settings:
    """The load each server start gets; identical for both sides."""

    rounds: int
    concurrency: int
    serial_prompts: int
    concurrent_prompts: int
    input_len: int
    output_len: int
    warmups: int
    seed: int
    max_model_len: int


@dataclass(frozen=True)
class Servers:
    """How to start each side: the planned launch, shared environment and served name."""

    model: str
    folder: str
    name: str
    plan: LaunchPlan
    options: tuple[str, ...]
    """The vLLM options given to ``amortized serve``; its planner adds the rest."""
    env: dict[str, str]
    plain_plugins: str

    def argv(self, side: str, port: int) -> tuple[list[str], dict[str, str]]:
        """The command line and extra environment of one side on ``port``."""
        if side == "plain":
            vllm = str(Path(sys.executable).with_name("vllm"))
            argv = [vllm, *dataclasses.replace(self.plan, port=port).argv]
            return argv, {**self.env, "VLLM_PLUGINS": self.plain_plugins}
        argv = [sys.executable, "-m", "amortized", "serve", self.model, "--port", str(port)]
        argv += ["--verbose", "--", *self.options]
        return argv, dict(self.env)


def plan_servers(model: str, max_model_len: int) -> Servers:
    """Work out both sides' launch with ``amortized serve``'s own planner (once)."""
    from amortized.models.pretrained import known_model_names
    from amortized.serving.capabilities import CAPABILITIES_ENV
    from amortized.serving.launcher import plan_launch
    from amortized.serving.plugin import PLUGIN_NAME

    name = model if model in known_model_names() else Path(model).name
    options = (*SERVER_OPTIONS, "--served-model-name", name, "--max-model-len", str(max_model_len))
    plan = plan_launch(model, "127.0.0.1", 8000, options)
    plugins = plan.env.get("VLLM_PLUGINS", "")
    plain = ",".join(n for n in plugins.split(",") if n and n != PLUGIN_NAME)
    env = {k: v for k, v in plan.env.items() if k != "VLLM_PLUGINS"}
    env |= {CAPABILITIES_ENV: "all", **OFFLINE}
    return Servers(model, plan.model, name, plan, options, env, plain)


@dataclass
class Started:
    """A running server: where it listens and how long it took to become healthy."""

    root_url: str
    startup_s: float
    log: Path


@contextmanager
def started(servers: Servers, side: str, log: Path) -> Iterator[Started]:
    """Start one side on a free port, check its routes, stop its whole process group after."""
    from amortized.serving.process import ServerProcess, free_port

    port = free_port()
    argv, env = servers.argv(side, port)
    begin = time.monotonic()
    with ServerProcess(argv, port, log, env=env) as server:
        took = time.monotonic() - begin
        check_routes(server.root_url, side)
        yield Started(server.root_url, took, log)


def check_routes(root_url: str, side: str) -> None:
    """Fail loudly unless the plain side has no amortized route and the other has them all."""
    from amortized.serving.capabilities import builtin_capabilities

    paths = list(httpx.get(f"{root_url}/openapi.json", timeout=30).json().get("paths", {}))
    ours = [p for p in paths if p.startswith(ROUTE_PREFIX)]
    if side == "plain":
        if ours:
            raise RuntimeError(f"plain vllm serve exposes amortized routes: {ours}")
        return
    info = httpx.get(f"{root_url}{ROUTE_PREFIX}/info", timeout=30).json()
    enabled = [c["name"] for c in info.get("capabilities", [])]
    wanted = [c.name for c in builtin_capabilities()]
    if f"{ROUTE_PREFIX}/info" not in ours or sorted(enabled) != sorted(wanted):
        raise RuntimeError(
            f"amortized serve is missing capabilities: routes {ours}, enabled {enabled}, "
            f"expected {wanted}"
        )


NON_DEFAULT = re.compile(r"non-default args: (.*)$", re.M)


def vllm_options(log: Path) -> str:
    """vLLM's ``non-default args`` line from a server log, without the port."""
    found = NON_DEFAULT.search(log.read_text(errors="replace"))
    if found is None:
        raise RuntimeError(f"no 'non-default args' line in {log}")
    return re.sub(r"'port': \d+, ", "", found.group(1).strip())


def bench(
    root_url: str, servers: Servers, settings: Settings, mode: str, out: Path, log: Path
) -> dict[str, Any]:
    """One ``vllm bench serve`` run against ``root_url``; its saved result JSON."""
    serial = mode == "serial"
    prompts = settings.serial_prompts if serial else settings.concurrent_prompts
    concurrency = 1 if serial else settings.concurrency
    # A different seed per mode: the concurrent run must not hit the serial run's prompts
    # in the prefix cache; the same seed for both sides and every round (fresh servers).
    seed = settings.seed + (0 if serial else 1)
    result = out.with_suffix(".json")
    argv = [str(Path(sys.executable).with_name("vllm")), "bench", "serve"]
    argv += ["--backend", "openai", "--base-url", root_url, "--endpoint", "/v1/completions"]
    argv += ["--model", servers.name, "--tokenizer", servers.folder]
    argv += ["--dataset-name", "random", "--random-input-len", str(settings.input_len)]
    argv += ["--random-output-len", str(settings.output_len), "--ignore-eos", "--temperature", "0"]
    argv += ["--num-prompts", str(prompts), "--max-concurrency", str(concurrency)]
    argv += ["--request-rate", "inf", "--seed", str(seed), "--num-warmups", str(settings.warmups)]
    argv += ["--percentile-metrics", "ttft,tpot,itl", "--disable-tqdm", "--save-result"]
    argv += ["--result-dir", str(result.parent), "--result-filename", result.name]
    with log.open("ab") as sink:
        code = subprocess.call(
            argv, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **OFFLINE}
        )
    if code != 0 or not result.is_file():
        from amortized.serving.process import log_tail

        raise RuntimeError(f"vllm bench serve failed ({code}); log {log}:\n{log_tail(log)}")
    data: dict[str, Any] = json.loads(result.read_text())
    if data.get("failed") or data.get("completed") != prompts:
        raise RuntimeError(f"vllm bench serve: {data.get('failed')} of {prompts} failed ({log})")
    return data


def measure(servers: Servers, settings: Settings, logs: Path) -> tuple[list[dict[str, Any]], str]:
    """Every round: both sides, each on a fresh server, in ABBA order; one row per start,
    and the vLLM options both sides logged (checked equal)."""
    plan = [
        (r, side) for r in range(settings.rounds) for side in (SIDES if r % 2 == 0 else SIDES[::-1])
    ]
    runs: list[dict[str, Any]] = []
    options: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="overhead-") as scratch:
        for round_index, side in tqdm(plan, desc="server starts", file=sys.stderr):
            stem = f"overhead-r{round_index}-{side}"
            run: dict[str, Any] = {"round": round_index, "side": side}
            begin = time.monotonic()
            (logs / f"{stem}-bench.log").unlink(missing_ok=True)
            with started(servers, side, logs / f"{stem}-server.log") as server:
                run["startup_s"] = server.startup_s
                for mode in MODES:
                    data = bench(
                        server.root_url,
                        servers,
                        settings,
                        mode,
                        Path(scratch) / f"{stem}-{mode}",
                        logs / f"{stem}-bench.log",
                    )
                    run[mode] = {
                        **{metric: float(data[key]) for metric, key in BENCH_KEYS.items()},
                        "request_throughput": data["request_throughput"],
                        "mean_ttft_ms": data["mean_ttft_ms"],
                        "mean_itl_ms": data["mean_itl_ms"],
                        "duration_s": data["duration"],
                        "completed": data["completed"],
                    }
            run["wall_s"] = time.monotonic() - begin
            options.setdefault(side, vllm_options(server.log))
            if len(options) == 2 and options["plain"] != options["amortized"]:
                raise RuntimeError(
                    "the two servers ran with different vLLM options:\n"
                    f"plain:     {options['plain']}\namortized: {options['amortized']}"
                )
            runs.append(run)
    return runs, options.get("plain", "")


def spread_of(values: Sequence[float]) -> float:
    """max - min; NaN for no values."""
    return max(values) - min(values) if values else float("nan")


def summarize(runs: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    """Per mode and metric: medians per side, per-round ratios amortized / plain, spreads."""
    by = {(r["round"], r["side"]): r for r in runs}
    done = [i for i in range(rounds) if all((i, side) in by for side in SIDES)]
    modes: dict[str, Any] = {}
    for mode in MODES:
        ratios = {
            m: [by[i, "amortized"][mode][m] / by[i, "plain"][mode][m] for i in done]
            for m in METRICS
        }
        modes[mode] = {
            **{f"{m}_ratio": median(ratios[m]) for m in METRICS},
            "spread": max(spread_of(v) for v in ratios.values()),
            "rounds": len(done),
            "per_round_ratios": ratios,
            "range": {m: [min(v), max(v)] for m, v in ratios.items() if v},
            **{
                side: {m: median([by[i, side][mode][m] for i in done]) for m in METRICS}
                for side in SIDES
            },
        }
    pooled = {m: [x for mode in MODES for x in modes[mode]["per_round_ratios"][m]] for m in METRICS}
    startup = {side: median([by[i, side]["startup_s"] for i in done]) for side in SIDES}
    return {
        **{f"{m}_ratio": median(pooled[m]) for m in METRICS},
        "spread": max(spread_of(v) for v in pooled.values()),
        "samples": {"rounds": len(done), "ratios_per_metric": len(pooled["throughput"])},
        "modes": modes,
        "startup_s": {**startup, "ratio": startup["amortized"] / startup["plain"]},
    }


def plot(result: dict[str, Any], path: Path) -> None:
    """Per-round ratios (points) and their medians (bars) per metric, one panel per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"throughput": "output tok/s", "ttft": "median TTFT", "itl": "median ITL"}
    fig, axes = plt.subplots(1, len(MODES), figsize=(9, 3.6), sharey=True)
    for axis, mode in zip(axes, MODES, strict=True):
        stats = result["modes"][mode]
        for x, metric in enumerate(METRICS):
            ratios = stats["per_round_ratios"][metric]
            axis.bar(x, stats[f"{metric}_ratio"] - 1, 0.6, bottom=1, color=f"C{x}", alpha=0.35)
            axis.scatter([x] * len(ratios), ratios, color=f"C{x}", zorder=3, s=18)
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_xticks(range(len(METRICS)), [labels[m] for m in METRICS])
        concurrency = 1 if mode == "serial" else result["settings"]["concurrency"]
        axis.set_title(f"{mode} (concurrency {concurrency}, {stats['rounds']} rounds)")
    axes[0].set_ylabel("amortized / plain vLLM")
    fig.suptitle(f"{result['model']}: per-round ratios (points), medians (bars)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)


def print_result(result: dict[str, Any]) -> None:
    """Per-start figures, then medians and ratios per mode and metric."""
    rows = [
        [
            r["round"],
            r["side"],
            r["startup_s"],
            *(r[mode][m] for mode in MODES for m in METRICS),
        ]
        for r in result["runs"]
    ]
    headers = ["round", "side", "start s"]
    headers += [f"{mode[:4]} {m}" for mode in MODES for m in ("tok/s", "TTFT ms", "ITL ms")]
    print_table(headers, rows)
    print()
    rows = []
    for mode in MODES:
        stats = result["modes"][mode]
        for metric in METRICS:
            low, high = stats["range"].get(metric, [float("nan")] * 2)
            rows.append(
                [
                    mode,
                    {"throughput": "output tok/s", "ttft": "TTFT ms", "itl": "ITL ms"}[metric],
                    stats["plain"][metric],
                    stats["amortized"][metric],
                    stats[f"{metric}_ratio"],
                    f"{low:.3f}-{high:.3f}",
                    stats["rounds"],
                ]
            )
    headers = ["mode", "metric", "plain", "amortized", "ratio", "per-round range", "rounds"]
    print_table(headers, rows)
    print(
        f"\nall: throughput_ratio {result['throughput_ratio']:.3f}, ttft_ratio "
        f"{result['ttft_ratio']:.3f}, itl_ratio {result['itl_ratio']:.3f}, spread "
        f"{result['spread']:.3f} (medians of {result['samples']['ratios_per_metric']} "
        "per-round ratios amortized / plain; spread: widest max - min)"
    )
    startup = result["startup_s"]
    print(
        f"start-up to healthy: plain {startup['plain']:.1f} s, amortized "
        f"{startup['amortized']:.1f} s (medians)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="a name from `amortized models list` or a folder (default: smollm2-135m-instruct)",
    )
    parser.add_argument("--rounds", type=int, help="A/B rounds, ABBA order (2 quick, 8)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent mode (4)")
    parser.add_argument("--serial-prompts", type=int, help="prompts, serial (4 quick, 16)")
    parser.add_argument("--concurrent-prompts", type=int, help="prompts, concurrent (8 quick, 32)")
    parser.add_argument("--input-len", type=int, help="prompt tokens (128 quick, 256)")
    parser.add_argument("--output-len", type=int, help="output tokens (32 quick, 64)")
    parser.add_argument("--warmups", type=int, help="warm-up requests per run (1 quick, 2)")
    parser.add_argument("--seed", type=int, default=0, help="random prompts' seed (0)")
    parser.add_argument("--max-model-len", type=int, default=2048, help="both servers (2048)")
    args = parser.parse_args(argv)
    settings = Settings(
        rounds=args.rounds or (2 if args.quick else 8),
        concurrency=args.concurrency,
        serial_prompts=args.serial_prompts or (4 if args.quick else 16),
        concurrent_prompts=args.concurrent_prompts or (8 if args.quick else 32),
        input_len=args.input_len or (128 if args.quick else 256),
        output_len=args.output_len or (32 if args.quick else 64),
        warmups=(1 if args.quick else 2) if args.warmups is None else args.warmups,
        seed=args.seed,
        max_model_len=args.max_model_len,
    )
    if settings.rounds < 1 or settings.concurrency < 2:
        parser.error("--rounds must be >= 1 and --concurrency >= 2")
    if settings.input_len + settings.output_len > settings.max_model_len:
        parser.error("--input-len + --output-len must fit in --max-model-len")
    from amortized.config import cache_dir

    logs = cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    servers = plan_servers(args.model, settings.max_model_len)
    print(f"plain:     {servers.argv('plain', 0)[0]}", file=sys.stderr)
    print(f"amortized: {servers.argv('amortized', 0)[0]}", file=sys.stderr)
    began = time.monotonic()
    runs, logged_options = measure(servers, settings, logs)
    result = {
        **summarize(runs, settings.rounds),
        "model": args.model,
        "settings": dataclasses.asdict(settings),
        "server": {
            "model_folder": servers.folder,
            "vllm_args": list(servers.plan.vllm_args),
            "env": servers.env,
            "plain_vllm_plugins": servers.plain_plugins,
            "non_default_args": logged_options,
        },
        "machine": {"cpus": os.cpu_count(), "load_average": list(os.getloadavg())},
        "seconds": time.monotonic() - began,
        "runs": runs,
    }
    print_result(result)
    print(f"took {result['seconds'] / 60:.1f} min", file=sys.stderr)
    write_json(args.json, result)
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
