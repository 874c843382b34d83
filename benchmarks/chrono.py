"""Think-while-listening latency: end of turn → first answer token, with and without thinking.

Simulated users speak the same messages as timed chunks (default 3 words/s). In one run,
against one server, three ways of answering are compared:

(a) no thinking: one ordinary streamed chat completion sent at end of turn;
(b) think after turn: the whole thinking budget is generated after end of turn, then the answer;
(c) chronological thinking: the same budget spread over the chunks while the user speaks.

Latency is measured by the client, from sending the end of turn to the first visible answer
text. With ``--base-url`` it runs against any ``amortized serve`` server; by default it starts
the tiny default model. The tiny model does not know when to stop thinking, so thinking is
forced to its budget (``min_tokens``) unless ``--natural-thinking``; answer quality needs a
real model and is not measured here.
"""

import asyncio
import math
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from amortized.serving.process import running_requests
from benchmarks._harness import (
    add_model_option,
    base_parser,
    median,
    print_table,
    served_model,
    write_json,
)

MESSAGES = (
    "I am planning a trip to the mountains next weekend and I want to know what I should pack "
    "if the weather turns cold",
    "Can you explain why the sky looks blue during the day but turns red and orange when the "
    "sun goes down",
    "My tomato plants have yellow leaves near the bottom and I water them every morning so what "
    "could be going wrong",
    "What is a good way to learn a new language when I only have twenty minutes each day after "
    "work",
    "I need a short and friendly message to tell my team that the meeting on Friday is moved to "
    "Monday morning",
    "How do I make bread at home without a machine if I have flour water salt and a little yeast",
    "Tell me the difference between a list and a tuple in Python and when I would pick one over "
    "the other",
    "We are three friends who like board games and we have two hours tonight so which game "
    "should we play",
    "Why does my phone battery drain so fast when I use maps while driving and how can I make it "
    "last longer",
    "I want to start running but my knees hurt after a few minutes so what should I change first",
    "Summarize the main reasons people give for keeping a daily journal and whether it really "
    "helps",
    "Which is cheaper over five years a small electric car or a small petrol car if I drive "
    "every day",
    "Help me plan a simple dinner for six people where two are vegetarian and one cannot eat nuts",
    "What should I check before I sign a lease for my first apartment in a big city",
    "Explain how a bill becomes a law in a few simple steps for a class of young students",
    "Is it better to pay off a small loan early or to save the money for emergencies first",
    "My cat keeps waking me up at five in the morning asking for food so how do I change that",
    "Give me three ideas for a birthday present for my father who likes fishing and old music",
    "How can I tell if a news story I read online is reliable before I share it with my family",
    "What are the first steps to take if water starts leaking from the ceiling of my kitchen",
)
MODES = ("nothink", "think_after", "chrono", "nothink_session")
LABELS = {
    "nothink": "(a) no thinking",
    "think_after": "(b) think after turn",
    "chrono": "(c) chrono",
    "nothink_session": "(a') no thinking, realtime",
}
"""(a') is (a) through the realtime endpoint, to separate the transport from the thinking."""


@dataclass(frozen=True)
class Target:
    """Where to send requests: a server's root URL, its API key and served model name."""

    root_url: str
    api_key: str | None
    model: str


@dataclass
class Outcome:
    """One simulated turn."""

    mode: str
    budget: int
    latency_ms: float | None
    thinking_tokens: int = 0
    answer_tokens: int = 0
    server_latency_ms: float | None = None
    error: str | None = None


@dataclass
class Settings:
    rate: float
    words_per_chunk: int
    answer_tokens: int
    force_budget: bool
    timeout: float
    extra: dict[str, Any] = field(default_factory=dict)


def chunks_of(message: str, words_per_chunk: int) -> list[str]:
    words = message.split(" ")
    pieces = [
        " ".join(words[i : i + words_per_chunk]) for i in range(0, len(words), words_per_chunk)
    ]
    return [p if i == 0 else " " + p for i, p in enumerate(pieces)]


def session_settings(mode: str, budget: int, chunks: int, settings: Settings) -> dict[str, Any]:
    """Realtime session settings for (b) and (c); (c) spreads the budget over the chunks."""
    answer = {"max_tokens": settings.answer_tokens, "temperature": 0.0}
    if mode == "nothink_session":
        thinking: dict[str, Any] = {"schedule": "off", "budget_tokens": 0}
    elif mode == "think_after":
        thinking = {"schedule": "after_turn", "budget_tokens": budget, "chunk_tokens": budget}
        thinking["min_tokens"] = budget if settings.force_budget else 0
    else:
        per_chunk = max(1, math.ceil(budget / chunks))
        thinking = {"schedule": "while_listening", "budget_tokens": budget}
        thinking |= {"chunk_tokens": per_chunk}
        thinking["min_tokens"] = per_chunk if settings.force_budget else 0
    return {"thinking": thinking, "answer": answer}


async def speak(pieces: list[str], rate_chunks: float, send: Any) -> None:
    """Send ``pieces`` at the speaking rate; returns at end of turn (after the last piece)."""
    start = time.perf_counter()
    for index, piece in enumerate(pieces):
        await asyncio.sleep(max(0.0, start + index / rate_chunks - time.perf_counter()))
        await send(piece)
    await asyncio.sleep(max(0.0, start + len(pieces) / rate_chunks - time.perf_counter()))


async def run_realtime(
    target: Target, message: str, mode: str, budget: int, settings: Settings
) -> Outcome:
    from amortized.agents.realtime import RealtimeSession

    pieces = chunks_of(message, settings.words_per_chunk)
    config = session_settings(mode, budget, len(pieces), settings)
    outcome = Outcome(mode=mode, budget=budget, latency_ms=None)
    async with RealtimeSession(target.root_url, target.api_key, session=config) as session:
        if mode == "chrono":
            await speak(pieces, settings.rate / settings.words_per_chunk, session.append)
        else:  # thinking happens after the turn, so pacing the input changes nothing
            await session.append(message)
        sent = time.perf_counter()
        await session.commit()
        async for delta in session.answer():
            if delta.strip() and outcome.latency_ms is None:
                outcome.latency_ms = (time.perf_counter() - sent) * 1000
        done = next(e for e in reversed(session.events) if e["type"] == "response.done")
        response = done["response"]
        outcome.thinking_tokens = int(response["usage"]["thinking_tokens"])
        outcome.answer_tokens = int(response["usage"]["output_tokens"])
        outcome.server_latency_ms = response["latency"]["end_of_turn_to_first_token_ms"]
        if response["status"] != "completed":
            outcome.error = f"status {response['status']}"
    return outcome


async def run_plain(target: Target, message: str, budget: int, settings: Settings) -> Outcome:
    """(a): the whole message as one chat completion at end of turn, streamed."""
    import openai

    client = openai.AsyncOpenAI(base_url=f"{target.root_url}/v1", api_key=target.api_key or "x")
    outcome = Outcome(mode="nothink", budget=budget, latency_ms=None)
    sent = time.perf_counter()
    stream = await client.chat.completions.create(
        model=target.model,
        messages=[{"role": "user", "content": message}],
        max_tokens=settings.answer_tokens,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        visible = chunk.choices and (chunk.choices[0].delta.content or "").strip()
        if visible and outcome.latency_ms is None:
            outcome.latency_ms = (time.perf_counter() - sent) * 1000
        if chunk.usage is not None:
            outcome.answer_tokens = chunk.usage.completion_tokens
    await client.close()
    return outcome


async def one_turn(
    target: Target, message: str, mode: str, budget: int, settings: Settings
) -> Outcome:
    try:
        async with asyncio.timeout(settings.timeout):
            if mode == "nothink":
                return await run_plain(target, message, budget, settings)
            return await run_realtime(target, message, mode, budget, settings)
    except Exception as error:  # a benchmark records failures instead of stopping
        return Outcome(mode=mode, budget=budget, latency_ms=None, error=repr(error)[:200])


async def settle(target: Target, timeout: float = 20) -> float:
    """Running requests after waiting up to ``timeout`` s for them to drain (0 = no leaks)."""
    deadline = time.monotonic() + timeout
    while (running := running_requests(target.root_url)) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return running


async def sequential(
    target: Target, messages: list[str], budgets: list[int], settings: Settings
) -> list[Outcome]:
    """Single-session latency: one turn at a time, the modes interleaved per message."""
    outcomes: list[Outcome] = []
    plan = [(m, b, mode) for b in budgets for m in messages for mode in MODES]
    for message, budget, mode in tqdm(plan, desc="sessions", file=sys.stderr):
        if mode in ("nothink", "nothink_session") and budget != budgets[0]:
            continue  # (a) does not depend on the budget: measured once per message
        outcomes.append(await one_turn(target, message, mode, budget, settings))
    return outcomes


async def under_load(
    target: Target, messages: list[str], budget: int, sessions: int, settings: Settings
) -> dict[str, Any]:
    """``sessions`` concurrent users per mode, starts staggered over one second."""
    result: dict[str, Any] = {}
    for mode in tqdm(MODES, desc=f"{sessions} concurrent", file=sys.stderr):

        async def user(index: int, mode: str = mode) -> Outcome:
            await asyncio.sleep(index / sessions)
            message = messages[index % len(messages)]
            return await one_turn(target, message, mode, budget, settings)

        outcomes = await asyncio.gather(*(user(i) for i in range(sessions)))
        leaked = await settle(target)
        result[mode] = {
            **latency_stats(outcomes),
            "errors": [o.error for o in outcomes if o.error],
            "running_requests_after": leaked,
        }
    return result


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def latency_stats(outcomes: list[Outcome]) -> dict[str, Any]:
    latencies = [o.latency_ms for o in outcomes if o.latency_ms is not None and not o.error]
    thinking = [o.thinking_tokens for o in outcomes if not o.error]
    return {
        "n": len(outcomes),
        "ok": len(latencies),
        "latency_median_ms": median(latencies),
        "latency_p95_ms": percentile(latencies, 95),
        "thinking_tokens_mean": statistics.fmean(thinking) if thinking else float("nan"),
    }


def summarize(outcomes: list[Outcome], budgets: list[int]) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for budget in budgets:
        for mode in MODES:
            chosen = [
                o
                for o in outcomes
                if o.mode == mode and (mode.startswith("nothink") or o.budget == budget)
            ]
            table[f"{mode}@{budget}"] = latency_stats(chosen)
    return table


@contextmanager
def local_server(model: str, logs: Path, max_model_len: int) -> Iterator[Target]:
    with served_model(model, logs / "chrono-server.log", max_model_len=max_model_len) as (
        root_url,
        name,
    ):
        yield Target(root_url, None, name)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = result["budgets"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.2
    for offset, mode in enumerate(MODES):
        medians = [result["single"][f"{mode}@{b}"]["latency_median_ms"] for b in budgets]
        p95 = [result["single"][f"{mode}@{b}"]["latency_p95_ms"] for b in budgets]
        xs = [i + (offset - 1.5) * width for i in range(len(budgets))]
        axes[0].bar(xs, medians, width, label=LABELS[mode], color=f"C{offset}")
        axes[0].scatter(xs, p95, marker="_", s=200, color="black")
    axes[0].set_xticks(range(len(budgets)), [f"budget {b}" for b in budgets])
    axes[0].set_ylabel("end of turn → first answer token (ms)")
    axes[0].set_yscale("log")
    axes[0].set_title("Single session: median (bar), p95 (tick)")
    axes[0].legend()
    load = result.get("load") or {}
    if load:
        modes = [m for m in MODES if m in load]
        axes[1].bar(
            [LABELS[m].replace(") ", ")\n").replace(", ", "\n") for m in modes],
            [load[m]["latency_median_ms"] for m in modes],
            color=[f"C{MODES.index(m)}" for m in modes],
        )
        axes[1].set_yscale("log")
        axes[1].set_title(f"{result['load_sessions']} concurrent sessions (median)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}", file=sys.stderr)


async def run(args: Any, target: Target) -> dict[str, Any]:
    settings = Settings(
        rate=args.rate,
        words_per_chunk=args.words_per_chunk,
        answer_tokens=args.answer_tokens,
        force_budget=not args.natural_thinking,
        timeout=args.timeout,
    )
    messages = list(MESSAGES[: args.messages or (5 if args.quick else len(MESSAGES))])
    budgets = [64, 256]
    # Warm-up: the first requests of a fresh server pay one-off costs.
    for mode in MODES:
        await one_turn(target, messages[0], mode, 64, settings)
    outcomes = await sequential(target, messages, budgets, settings)
    single = summarize(outcomes, budgets)
    load_sessions = 8 if args.quick else args.sessions
    load = await under_load(target, messages, 256, load_sessions, settings)
    leaked = await settle(target)
    errors = [o.error for o in outcomes if o.error]
    a, b, c, a_realtime = (single[f"{m}@256"] for m in MODES)
    summary = {
        "latency_ratio_chrono_vs_nothink": c["latency_median_ms"] / a["latency_median_ms"],
        "latency_ratio_chrono_vs_nothink_realtime": c["latency_median_ms"]
        / a_realtime["latency_median_ms"],
        "speedup_chrono_vs_think_after": b["latency_median_ms"] / c["latency_median_ms"],
        "thinking_tokens_ratio_chrono_vs_think_after": c["thinking_tokens_mean"]
        / b["thinking_tokens_mean"],
        "budget": 256,
        "load_sessions": load_sessions,
        "load_errors": sum(len(v["errors"]) for v in load.values()),
        "load_running_requests_after": max(v["running_requests_after"] for v in load.values()),
    }
    return {
        "summary": summary,
        "budgets": budgets,
        "single": single,
        "load": load,
        "load_sessions": load_sessions,
        "errors": errors,
        "running_requests_after": leaked,
        "settings": {
            "rate_words_per_s": settings.rate,
            "words_per_chunk": settings.words_per_chunk,
            "answer_max_tokens": settings.answer_tokens,
            "thinking_forced_to_budget": settings.force_budget,
            "messages": len(messages),
        },
        "turns": [vars(o) for o in outcomes],
    }


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="an amortized server (default: start --model)")
    parser.add_argument("--api-key", help="the server's --api-key")
    add_model_option(parser, "amortized-default, the tiny model built here")
    parser.add_argument("--rate", type=float, default=3.0, help="speaking rate, words/s (3)")
    parser.add_argument("--words-per-chunk", type=int, default=2, help="words per append (2)")
    parser.add_argument("--answer-tokens", type=int, default=32, help="answer max_tokens (32)")
    parser.add_argument("--messages", type=int, help="messages per mode and budget (5 quick, 20)")
    parser.add_argument("--sessions", type=int, default=16, help="concurrent sessions (16)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per turn")
    parser.add_argument(
        "--natural-thinking",
        action="store_true",
        help="let the model end its thinking early (default: spend the budget)",
    )
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.words_per_chunk < 1:
        parser.error("--rate must be > 0 and --words-per-chunk >= 1")

    if args.base_url:
        root = args.base_url.rstrip("/").removesuffix("/v1")
        result = asyncio.run(run(args, Target(root, args.api_key, args.model or "default")))
    else:
        from amortized.config import cache_dir

        with local_server(args.model or "amortized-default", cache_dir() / "logs", 2048) as target:
            result = asyncio.run(run(args, target))

    rows = []
    for key, stats in result["single"].items():
        mode, budget = key.split("@")
        rows.append(
            [
                LABELS[mode],
                "-" if mode.startswith("nothink") else budget,
                stats["ok"],
                stats["latency_median_ms"],
                stats["latency_p95_ms"],
                stats["thinking_tokens_mean"],
            ]
        )
    print_table(["mode", "budget", "turns", "median ms", "p95 ms", "thinking tokens"], rows)
    print()
    load_rows = [
        [
            LABELS[m],
            s["ok"],
            s["latency_median_ms"],
            s["latency_p95_ms"],
            len(s["errors"]),
            s["running_requests_after"],
        ]
        for m, s in result["load"].items()
    ]
    print(f"load: {result['load_sessions']} concurrent sessions, budget 256")
    print_table(["mode", "turns", "median ms", "p95 ms", "errors", "running after"], load_rows)
    print()
    for key, value in result["summary"].items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    write_json(args.json, result)
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
