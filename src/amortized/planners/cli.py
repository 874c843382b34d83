"""``amortized plan``: write (or reuse) one policy program and solve many instances with it."""

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from amortized.errors import AmortizedError

if TYPE_CHECKING:
    from amortized.cli_support import OneLineParser
    from amortized.planners.ipp import RoundRecord


def add_plan_command(subparsers: "argparse._SubParsersAction[OneLineParser]") -> None:
    p = subparsers.add_parser(
        "plan", help="solve grid-world instances with one LLM-written policy program (IPP)"
    )
    p.add_argument("--env", required=True, help="GRASP or a MiniGrid id (MiniGrid-DoorKey-8x8-v0)")
    p.add_argument("--movement", type=int, choices=(4, 8), default=4, help="GRASP directions")
    p.add_argument("--carry-limit", type=int, default=100, help="GRASP (paper: 100 or 2)")
    p.add_argument("--cost", type=float, default=0.0, help="GRASP cost per step (paper: 0, 0.3)")
    p.add_argument(
        "--grasp-dir",
        type=Path,
        help="published GRASP data (grids/, greedy_results/); default $AMORTIZED_GRASP_DIR, "
        "else generated grids",
    )
    p.add_argument("--instances", type=int, default=100, help="how many instances to solve")
    p.add_argument("--seed", type=int, default=0, help="instance seed (generated grids, MiniGrid)")
    p.add_argument(
        "--strategy", choices=("direct", "pseudocode", "curriculum", "refine"), default="refine"
    )
    p.add_argument("--mode", choices=("solve", "act"), default="solve", help="open/closed loop")
    p.add_argument("--rounds", type=int, default=5, help="LLM rounds at most")
    p.add_argument("--max-tokens", type=int, help="LLM token budget for planning")
    p.add_argument("--wall-time", type=float, help="planning wall-time budget, seconds")
    p.add_argument("--train", type=int, default=20, help="instances the rounds evaluate on")
    p.add_argument("--examples", type=int, default=1, help="instances shown in the prompt")
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    p.add_argument("--api-key")
    p.add_argument("--model", help="served model name (default: the server's first)")
    p.add_argument("--library", type=Path, help="program library folder")
    p.add_argument("--no-reuse", action="store_true", help="plan even if a program is stored")
    p.add_argument("--prompt-price", type=float, default=0.0, help="$ per million prompt tokens")
    p.add_argument("--completion-price", type=float, default=0.0, help="$ per million output")
    p.add_argument("--out", type=Path, help="write per-instance results here (JSON lines)")
    p.set_defaults(handler=_plan)


def _print_round(record: "RoundRecord") -> None:
    score = "-" if record.mean_score is None else f"{record.mean_score:.3f}"
    success = "-" if record.success_rate is None else f"{record.success_rate:.0%}"
    note = f"  ({record.error.splitlines()[0][:100]})" if record.error else ""
    print(
        f"round {record.index + 1} [{record.stage}] score {score} success {success} "
        f"tokens {record.prompt_tokens}+{record.completion_tokens}{note}",
        file=sys.stderr,
    )


def _plan(args: argparse.Namespace) -> int:
    import openai

    from amortized.llm import OpenAICompatibleBackend
    from amortized.planners.cost import Prices
    from amortized.planners.environments import make_environment
    from amortized.planners.ipp import BudgetTooSmall, PlannerBudget, PlannerOptions, Strategy
    from amortized.planners.library import ProgramLibrary
    from amortized.planners.sandbox import SandboxError
    from amortized.planners.solver import (
        PlannerUnavailableError,
        SolveOptions,
        SolveReport,
        solve_task,
    )

    if args.instances < 1 or args.rounds < 1 or args.train < 1:
        raise AmortizedError("--instances, --rounds and --train must be at least 1")
    settings: dict[str, object] = {}
    if args.env.lower() == "grasp":
        settings = {
            "movement": args.movement,
            "carry_limit": args.carry_limit,
            "cost_per_step": args.cost,
            "data_dir": args.grasp_dir,
        }
    env = make_environment(args.env, **settings)
    instances = env.instances(args.instances, seed=args.seed)
    options = SolveOptions(
        planner=PlannerOptions(
            strategy=Strategy(args.strategy),
            mode=args.mode,
            examples=args.examples,
            budget=PlannerBudget(
                rounds=args.rounds, max_tokens=args.max_tokens, wall_time_s=args.wall_time
            ),
        ),
        train_instances=args.train,
        reuse=not args.no_reuse,
        min_validated_instances=min(args.train, len(instances)),
        prices=Prices(args.prompt_price, args.completion_price),
    )
    library = ProgramLibrary(args.library)

    async def run() -> SolveReport:
        backend = OpenAICompatibleBackend(args.base_url, args.api_key, args.model)
        try:
            return await solve_task(
                env,
                instances,
                backend=backend,
                options=options,
                library=library,
                model_name=args.model or args.base_url,
                on_round=_print_round,
                progress=True,
            )
        finally:
            await backend.close()

    try:
        report = asyncio.run(run())
    except (PlannerUnavailableError, SandboxError, BudgetTooSmall) as error:
        raise AmortizedError(str(error)) from error
    except (OSError, openai.APIConnectionError) as error:
        raise AmortizedError(f"cannot reach {args.base_url}: {error}") from error
    evaluation = report.evaluation
    if args.out is not None and evaluation is not None:
        with args.out.open("w") as handle:
            for outcome in evaluation.outcomes:
                row = {
                    "id": outcome.instance_id,
                    "status": outcome.status.value,
                    "score": outcome.score,
                    "success": outcome.success,
                    "actions": outcome.actions,
                    "error": outcome.error,
                }
                handle.write(json.dumps(row) + "\n")
    summary = {
        "signature": report.signature,
        "status": report.status,
        "program_id": report.program.program_id if report.program else None,
        "instances": len(instances),
        "mean_score": evaluation.mean_score if evaluation else None,
        "success_rate": evaluation.success_rate if evaluation else None,
        "counts": evaluation.counts if evaluation else {},
        "sandbox_mode": evaluation.sandbox_mode if evaluation else None,
        "stopped": report.planning.stopped if report.planning else None,
        "cost": report.cost.to_dict(),
        "wall_s": round(report.wall_s, 3),
    }
    print(json.dumps(summary))
    return 0 if report.program is not None else 1
