"""Code-policy grid planners: baselines, sandbox throughput, IPP vs direct elicitation cost.

Per environment and setting: mean score and success of the random policy, our greedy/BFS
program and (GRASP with the published data) the paper's greedy answers, all run through the
sandbox and scored by the trusted environment. With an LLM (the local tiny model by default,
or ``--base-url``), IPP plans one program per task and direct elicitation asks once per
instance; LLM tokens per instance give the amortization ratio over GRASP's 16,000 instances.

    python -m benchmarks.planners --quick --json planners.json --plot planners.png
"""

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from amortized.config import cache_dir
from amortized.llm import OpenAICompatibleBackend
from amortized.planners.cost import amortization_ratio
from amortized.planners.direct import solve_directly
from amortized.planners.environments import GraspEnvironment, GraspSettings, make_environment
from amortized.planners.environments.base import Environment, Instance
from amortized.planners.environments.grasp import published_greedy_answers
from amortized.planners.environments.grasp_data import resolve_data_dir
from amortized.planners.evaluation import evaluate_program
from amortized.planners.ipp import PlannerBudget, PlannerOptions, ProgramPlanner, Strategy
from amortized.planners.policies import load_reference_policy, reference_policy_source
from amortized.planners.sandbox import Sandbox
from amortized.planners.solver import SolveOptions
from benchmarks._harness import (
    add_model_option,
    base_parser,
    print_table,
    served_model,
    write_json,
)

GRASP_INSTANCES_TOTAL = 16000
"""2,000 published grids x 8 settings: the amortization horizon the paper quotes."""
MINIGRID_ENVS = ("MiniGrid-DoorKey-8x8-v0", "MiniGrid-Unlock-v0", "MiniGrid-UnlockPickup-v0")


@dataclass(frozen=True)
class LLMTarget:
    base_url: str
    api_key: str | None
    model: str | None


def grasp_environments(data_dir: Path | None) -> list[GraspEnvironment]:
    return [GraspEnvironment(s, data_dir=data_dir) for s in GraspSettings.published()]


def run_policy(
    env: Environment, name: str, instances: list[Instance], sandbox: Sandbox
) -> dict[str, Any]:
    report = evaluate_program(env, reference_policy_source(name), instances, sandbox=sandbox)
    return {
        "mean_score": report.mean_score,
        "success_rate": report.success_rate,
        "counts": report.counts,
        "wall_s": report.wall_s,
        "instances_per_s": report.instances_per_s,
    }


def published_greedy(env: GraspEnvironment, instances: list[Instance]) -> dict[str, Any] | None:
    if resolve_data_dir(env.data_dir) is None:
        return None
    answers = published_greedy_answers(env.data_dir, env.settings)
    episodes = [env.evaluate(i, answers[i.instance_id]) for i in instances]
    return {
        "mean_score": sum(e.score for e in episodes) / len(episodes),
        "success_rate": sum(e.success for e in episodes) / len(episodes),
    }


def baselines(
    environments: list[Environment], counts: dict[str, int], sandbox: Sandbox
) -> list[dict[str, Any]]:
    rows = []
    for env in tqdm(environments, desc="baselines", file=sys.stderr):
        greedy_name = "grasp_greedy" if isinstance(env, GraspEnvironment) else "minigrid_bfs"
        instances = env.instances(counts[env.env_id], seed=0)
        row: dict[str, Any] = {"signature": env.signature, "instances": len(instances)}
        row["random"] = run_policy(env, "random_policy", instances, sandbox)
        row["greedy"] = run_policy(env, greedy_name, instances, sandbox)
        if isinstance(env, GraspEnvironment):
            row["published_greedy"] = published_greedy(env, instances)
        rows.append(row)
    return rows


def sandbox_throughput(data_dir: Path | None, count: int, sandbox: Sandbox) -> dict[str, Any]:
    """The typical nearest-first BFS program over ``count`` GRASP instances per setting, one
    worker per setting, scoring included."""
    per_setting: list[dict[str, Any]] = []
    for env in grasp_environments(data_dir):
        instances = env.instances(count, seed=1)
        report = evaluate_program(
            env, reference_policy_source("grasp_nearest"), instances, sandbox=sandbox
        )
        solve = load_reference_policy("grasp_nearest")
        started = time.perf_counter()
        for instance in instances:
            env.evaluate(instance, solve(instance.observation))
        in_process_s = time.perf_counter() - started
        per_setting.append(
            {
                "signature": env.signature,
                "instances": count,
                "wall_s": report.wall_s,
                "instances_per_s": report.instances_per_s,
                "in_process_s": in_process_s,
                "mean_score": report.mean_score,
                "worker_starts": report.worker_starts,
                "counts": report.counts,
                "sandboxed_by": report.sandboxed_by,
            }
        )
    total = sum(r["instances"] for r in per_setting)
    wall = sum(r["wall_s"] for r in per_setting)
    in_process = sum(r["in_process_s"] for r in per_setting)
    return {
        "program": "grasp_nearest",
        "instances": total,
        "wall_s": wall,
        "instances_per_s": total / wall if wall else 0.0,
        "in_process_instances_per_s": total / in_process if in_process else 0.0,
        "sandbox_overhead_ratio": wall / in_process if in_process else 0.0,
        "sandboxed_by": per_setting[0]["sandboxed_by"],
        "per_setting": per_setting,
    }


async def llm_comparison(
    target: LLMTarget,
    environments: list[Environment],
    *,
    rounds: int,
    train: int,
    direct_instances: int,
    completion_tokens: int,
    sandbox: Sandbox,
) -> list[dict[str, Any]]:
    backend = OpenAICompatibleBackend(target.base_url, target.api_key, target.model)
    rows = []
    try:
        for env in tqdm(environments, desc="IPP vs direct", file=sys.stderr):
            instances = env.instances(max(train, direct_instances), seed=2)
            planner = ProgramPlanner(
                backend,
                env,
                options=PlannerOptions(
                    strategy=Strategy.REFINE,
                    budget=PlannerBudget(rounds=rounds, completion_tokens=completion_tokens),
                ),
                sandbox=sandbox,
            )
            started = time.perf_counter()
            plan = await planner.plan(instances[:train])
            plan_s = time.perf_counter() - started
            started = time.perf_counter()
            direct = await solve_directly(
                backend, env, instances[:direct_instances], max_tokens=completion_tokens
            )
            direct_s = time.perf_counter() - started
            report = plan.best_report
            direct_per_instance = direct.usage.total_tokens / max(1, direct_instances)
            rows.append(
                {
                    "signature": env.signature,
                    "ipp": {
                        "rounds": len(plan.rounds),
                        "stopped": plan.stopped,
                        "llm_calls": plan.usage.calls,
                        "tokens": plan.usage.total_tokens,
                        "mean_score": report.mean_score if report else None,
                        "success_rate": report.success_rate if report else None,
                        "program": plan.best.program_id if plan.best else None,
                        "round_errors": [r.error for r in plan.rounds if r.error],
                        "wall_s": plan_s,
                    },
                    "direct": {
                        "instances": direct_instances,
                        "llm_calls": direct.usage.calls,
                        "tokens_per_instance": direct_per_instance,
                        "mean_score": direct.mean_score,
                        "success_rate": direct.success_rate,
                        "wall_s": direct_s,
                    },
                    "amortization_ratio_16000": (
                        amortization_ratio(
                            direct_per_instance, plan.usage.total_tokens, GRASP_INSTANCES_TOTAL
                        )
                        if both_did_the_work(report, direct.success_rate)
                        else None
                    ),
                }
            )
    finally:
        await backend.close()
    return rows


def both_did_the_work(report: Any, direct_success_rate: float) -> bool:
    """A ratio only compares two ways of solving the task: the program must be validated
    (the reuse bar of ``amortized.planners.solver``) and the direct calls must solve some."""
    validated = report is not None and report.success_rate >= SolveOptions().min_success_rate
    return validated and direct_success_rate > 0


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grasp = [r for r in result["baselines"] if r["signature"].startswith("GRASP")]
    labels = [r["signature"].removeprefix("GRASP/") for r in grasp]
    series = {
        "random": [r["random"]["mean_score"] for r in grasp],
        "our greedy (sandboxed)": [r["greedy"]["mean_score"] for r in grasp],
    }
    if all(r.get("published_greedy") for r in grasp):
        series["published greedy"] = [r["published_greedy"]["mean_score"] for r in grasp]
    figure, axis = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(series)
    for k, (name, values) in enumerate(series.items()):
        axis.bar([i + k * width for i in range(len(labels))], values, width, label=name)
    axis.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels, rotation=20)
    axis.set_ylabel("mean score (energy at start - cost)")
    axis.set_title("GRASP: mean score per setting")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"wrote {path}", file=sys.stderr)


@contextmanager
def llm_target(args: Any) -> Iterator[LLMTarget | None]:
    if args.no_llm:
        yield None
    elif args.base_url:
        yield LLMTarget(args.base_url, args.api_key, args.model)
    else:
        log = cache_dir() / "logs" / "planners-bench-server.log"
        with served_model(args.model or "amortized-default", log) as (root_url, name):
            yield LLMTarget(root_url + "/v1", None, name)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--grasp-dir",
        type=Path,
        help="published GRASP data (default $AMORTIZED_GRASP_DIR, else generated grids)",
    )
    parser.add_argument("--base-url", help="an OpenAI-compatible server (default: start --model)")
    parser.add_argument("--api-key")
    add_model_option(parser, "amortized-default, the tiny model built here")
    parser.add_argument("--no-llm", action="store_true", help="baselines and sandbox only")
    parser.add_argument("--rounds", type=int, default=3, help="IPP refinement rounds")
    parser.add_argument("--train", type=int, default=20, help="instances IPP evaluates on")
    parser.add_argument("--direct-instances", type=int, help="direct-elicitation instances")
    parser.add_argument("--completion-tokens", type=int, default=1024)
    args = parser.parse_args(argv)

    data_dir = args.grasp_dir or (
        Path(os.environ["AMORTIZED_GRASP_DIR"]) if os.environ.get("AMORTIZED_GRASP_DIR") else None
    )
    if data_dir is not None and not (data_dir / "grids").is_dir():
        parser.error(f"--grasp-dir {data_dir}: no grids/ folder there")
    sandbox = Sandbox()
    grasp_count = 200 if args.quick else 2000
    minigrid_count = 20 if args.quick else 100
    environments: list[Environment] = [*grasp_environments(data_dir)]
    environments += [make_environment(e) for e in MINIGRID_ENVS]
    counts = {"GRASP": grasp_count} | dict.fromkeys(MINIGRID_ENVS, minigrid_count)

    result: dict[str, Any] = {
        "data": "published" if data_dir else "generated",
        "baselines": baselines(environments, counts, sandbox),
        "sandbox": sandbox_throughput(data_dir, 250 if args.quick else 2000, sandbox),
    }
    with llm_target(args) as target:
        if target is not None:
            llm_envs = [environments[0], environments[-3]] if args.quick else environments
            result["llm"] = asyncio.run(
                llm_comparison(
                    target,
                    llm_envs,
                    rounds=2 if args.quick else args.rounds,
                    train=min(args.train, 10) if args.quick else args.train,
                    direct_instances=args.direct_instances or (5 if args.quick else 20),
                    completion_tokens=min(args.completion_tokens, 512)
                    if args.quick
                    else args.completion_tokens,
                    sandbox=sandbox,
                )
            )
            result["llm_model"] = target.model or target.base_url

    rows = []
    for r in result["baselines"]:
        published = r.get("published_greedy")
        rows.append(
            [
                r["signature"],
                r["instances"],
                r["random"]["mean_score"],
                r["random"]["success_rate"],
                r["greedy"]["mean_score"],
                r["greedy"]["success_rate"],
                published["mean_score"] if published else "-",
                r["greedy"]["instances_per_s"],
            ]
        )
    print_table(
        [
            "task",
            "n",
            "random score",
            "random succ",
            "greedy score",
            "greedy succ",
            "published greedy",
            "inst/s",
        ],
        rows,
    )
    llm_rows = result.get("llm", [])
    if llm_rows:
        print()
        print_table(
            [
                "task",
                "IPP calls",
                "IPP tokens",
                "IPP score",
                "direct tok/inst",
                "direct score",
                "ratio@16000",
            ],
            [
                [
                    r["signature"],
                    r["ipp"]["llm_calls"],
                    r["ipp"]["tokens"],
                    r["ipp"]["mean_score"] if r["ipp"]["mean_score"] is not None else "-",
                    r["direct"]["tokens_per_instance"],
                    r["direct"]["mean_score"],
                    r["amortization_ratio_16000"] or "- (no validated program)",
                ]
                for r in llm_rows
            ],
        )
    grasp_rows = [r for r in result["baselines"] if r["signature"].startswith("GRASP")]
    ratios = [
        r["amortization_ratio_16000"]
        for r in llm_rows
        if r["signature"].startswith("GRASP") and r["amortization_ratio_16000"] is not None
    ]
    result["summary"] = {
        "sandbox_instances_per_s": result["sandbox"]["instances_per_s"],
        "grasp_greedy_mean": sum(r["greedy"]["mean_score"] for r in grasp_rows) / len(grasp_rows),
        "amortization_ratio_16000": min(ratios) if ratios else None,
    }
    published = [
        r["published_greedy"]["mean_score"] for r in grasp_rows if r.get("published_greedy")
    ]
    if published:
        result["summary"]["grasp_published_greedy_mean"] = sum(published) / len(published)
    print()
    for key, value in result["summary"].items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    write_json(args.json, result)
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
