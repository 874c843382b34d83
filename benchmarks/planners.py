"""Code-policy grid planners: baselines, sandbox throughput, IPP vs direct elicitation cost.

Per environment and setting: mean score and success of the random policy, our greedy/BFS
program and (GRASP with the published data) the paper's greedy answers, all run through the
sandbox and scored by the trusted environment. With an LLM (the local tiny model by default,
or ``--base-url``), IPP plans one program per task and direct elicitation asks once per
instance; LLM tokens per instance give the amortization ratio over GRASP's 16,000 instances.
``--compare-sandbox-ref GITREF`` also measures the sandbox of another commit side by side.

    python -m benchmarks.planners --quick --json planners.json --plot planners.png
    python -m benchmarks.planners --quick --no-llm --compare-sandbox-ref 99eba7f
"""

import asyncio
import compileall
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
import venv
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
    median,
    print_table,
    served_model,
    write_json,
)

GRASP_INSTANCES_TOTAL = 16000
"""2,000 published grids x 8 settings: the amortization horizon the paper quotes."""
MINIGRID_ENVS = ("MiniGrid-DoorKey-8x8-v0", "MiniGrid-Unlock-v0", "MiniGrid-UnlockPickup-v0")
REPO_ROOT = Path(__file__).resolve().parents[1]
SANDBOX_PROBE_MARK = "sandbox-probe: "
"""Prefix of the one JSON line a comparison subprocess prints on stdout."""
SANDBOX_RATIO_FLOOR = 0.8
"""Issue 19: the current sandbox's throughput within 20% of the reference commit's."""


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


@dataclass(frozen=True)
class SandboxSide:
    """One side of ``--compare-sandbox-ref``: whose ``amortized`` runs, and with which Python."""

    name: str
    label: str
    src: Path
    python: Path


def sandbox_probe(argv: list[str]) -> None:
    """Subprocess entry of the comparison: :func:`sandbox_throughput` with whatever
    ``amortized`` this interpreter imports, as one JSON line, so both sides run this same code.

    ``argv``: the GRASP data folder ('' for generated grids) and the instances per setting.
    """
    import amortized

    data_dir, count = argv
    sandbox = Sandbox()  # weak mode needs AMORTIZED_SANDBOX_ALLOW_WEAK=1, which the parent sets
    mode = getattr(sandbox, "mode", "bubblewrap" if sandbox.use_bubblewrap else "weak")
    result = sandbox_throughput(Path(data_dir) if data_dir else None, int(count), sandbox)
    # The worker runs `python -I`, which ignores PYTHONPATH: say which code it really imports.
    spec = (
        "import importlib.util as u; "
        "print(u.find_spec('amortized.planners.sandbox._worker').origin)"
    )
    worker = subprocess.run(
        [sys.executable, "-I", "-c", spec], capture_output=True, text=True, cwd="/", check=False
    )
    line = {
        "instances": result["instances"],
        "wall_s": result["wall_s"],
        "instances_per_s": result["instances_per_s"],
        "sandboxed_by": result["sandboxed_by"],
        "mode": mode,
        "mean_score": sum(r["mean_score"] for r in result["per_setting"])
        / len(result["per_setting"]),
        "worker_starts": sum(r["worker_starts"] for r in result["per_setting"]),
        "per_setting_instances_per_s": [r["instances_per_s"] for r in result["per_setting"]],
        "amortized": amortized.__file__,
        "worker_module": worker.stdout.strip() or f"? {worker.stderr.strip()[-300:]}",
    }
    print(SANDBOX_PROBE_MARK + json.dumps(line), flush=True)


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def resolve_commit(gitref: str) -> str:
    """The full commit id of ``gitref``; ValueError when git does not know it."""
    try:
        return _git("rev-parse", "--verify", "--quiet", f"{gitref}^{{commit}}")
    except RuntimeError as exc:
        raise ValueError(f"{gitref!r} is not a commit in {REPO_ROOT}") from exc


def overlay_python(folder: Path, src: Path) -> Path:
    """A bare venv over this environment's packages whose ``amortized`` is the one in ``src``.

    The sandbox starts its worker with ``python -I``, which ignores PYTHONPATH, so the worker
    would import the editable install (the current code) on both sides. A ``.pth`` is read
    in isolated mode too: it puts ``src`` first, then this environment's site-packages (as
    plain paths, so the editable install's own ``.pth`` is not read). Both sides get one.
    """
    venv.EnvBuilder(symlinks=True, with_pip=False).create(folder)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    packages = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    site = folder / "lib" / version / "site-packages"
    (site / "amortized-side.pth").write_text("\n".join([str(src), *packages]) + "\n")
    return folder / "bin" / "python"


def run_sandbox_probe(
    side: SandboxSide, data_dir: Path | None, count: int, timeout_s: float
) -> dict[str, Any]:
    """One side's throughput in its own process; a failure comes back as ``{"error": ...}``."""
    env = os.environ | {"PYTHONPATH": str(side.src), "AMORTIZED_SANDBOX_ALLOW_WEAK": "1"}
    command = (
        "import sys; from benchmarks.planners import sandbox_probe; sandbox_probe(sys.argv[1:])"
    )
    argv = [str(side.python), "-c", command, str(data_dir or ""), str(count)]
    try:
        done = subprocess.run(
            argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout_s:.0f} s"}
    lines = [x for x in done.stdout.splitlines() if x.startswith(SANDBOX_PROBE_MARK)]
    if done.returncode != 0 or not lines:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        return {"error": f"exit {done.returncode}: {tail or 'no result line'}"}
    result: dict[str, Any] = json.loads(lines[-1].removeprefix(SANDBOX_PROBE_MARK))
    if not Path(result["worker_module"]).is_relative_to(side.src):
        return {"error": f"the worker imports {result['worker_module']}, not {side.src}"}
    return result


def summarise_side(side: SandboxSide, runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    rates = [r["instances_per_s"] for r in ok]
    return {
        "label": side.label,
        "src": str(side.src),
        "mode": ok[0]["mode"] if ok else None,
        "sandboxed_by": ok[0]["sandboxed_by"] if ok else None,
        "runs_ok": len(ok),
        "runs_failed": len(runs) - len(ok),
        "median_instances_per_s": median(rates) if rates else None,
        "min_instances_per_s": min(rates) if rates else None,
        "max_instances_per_s": max(rates) if rates else None,
        "errors": [r["error"] for r in runs if "error" in r],
        "runs": runs,
    }


def compare_sandbox(gitref: str, data_dir: Path | None, count: int, rounds: int) -> dict[str, Any]:
    """:func:`sandbox_throughput` of ``gitref``'s sandbox and the working tree's, each run in
    its own process and interleaved (the order alternating per round) so machine noise hits
    both; the ratio current/ref of the medians is what issue 19 bounds (>= 0.8)."""
    commit = resolve_commit(gitref)
    current = _git("describe", "--always", "--dirty")
    with tempfile.TemporaryDirectory(prefix="amortized-bench-compare-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # the new sandbox's worker runs as an unprivileged uid under root
        worktree = root / "ref"
        _git("worktree", "add", "--detach", str(worktree), commit)
        try:
            sides = [
                SandboxSide(
                    "ref", f"{gitref} ({commit[:10]})", worktree / "src",
                    overlay_python(root / "venv-ref", worktree / "src"),
                ),
                SandboxSide(
                    "current", f"working tree ({current})", REPO_ROOT / "src",
                    overlay_python(root / "venv-current", REPO_ROOT / "src"),
                ),
            ]  # fmt: skip
            for side in sides:  # the worker (-B) never writes bytecode: same start for both
                compileall.compile_dir(side.src / "amortized", quiet=1)
            runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in sides}
            order: list[str] = []
            timeout_s = 120 + count * len(GraspSettings.published()) * 0.05
            progress = tqdm(
                total=rounds * len(sides), desc="sandbox ref vs current", file=sys.stderr
            )
            for index in range(rounds):
                for side in sides if index % 2 == 0 else sides[::-1]:
                    run = run_sandbox_probe(side, data_dir, count, timeout_s)
                    runs[side.name].append(run)
                    order.append(side.name)
                    if "error" in run:
                        print(f"sandbox {side.name}: {run['error']}", file=sys.stderr)
                    progress.update()
            progress.close()
        finally:
            try:
                _git("worktree", "remove", "--force", str(worktree))
            except RuntimeError as exc:
                print(f"warning: {exc}; run `git worktree prune`", file=sys.stderr)
    ref = summarise_side(sides[0], runs["ref"])
    new = summarise_side(sides[1], runs["current"])
    ratio = None
    if ref["median_instances_per_s"] and new["median_instances_per_s"] is not None:
        ratio = new["median_instances_per_s"] / ref["median_instances_per_s"]
    return {
        "gitref": gitref,
        "commit": commit,
        "program": "grasp_nearest",
        "instances_per_run": count * len(GraspSettings.published()),
        "rounds": rounds,
        "order": order,
        "ref": ref,
        "current": new,
        "ratio_current_over_ref": ratio,
        "floor": SANDBOX_RATIO_FLOOR,
        "within_20pct": None if ratio is None else ratio >= SANDBOX_RATIO_FLOOR,
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


def print_sandbox_comparison(comparison: dict[str, Any]) -> None:
    """The two sides' medians and ranges, then the ratio against the 0.8 floor."""
    if "error" in comparison:
        print(f"sandbox comparison with {comparison['gitref']} failed: {comparison['error']}")
        return
    rows = []
    for name in ("ref", "current"):
        side = comparison[name]
        low, high = side["min_instances_per_s"], side["max_instances_per_s"]
        rows.append(
            [
                name,
                side["label"],
                side["sandboxed_by"] or side["mode"] or "-",
                f"{side['runs_ok']}/{side['runs_ok'] + side['runs_failed']}",
                side["median_instances_per_s"] if side["runs_ok"] else "FAILED",
                f"{low:.0f}-{high:.0f}" if side["runs_ok"] else "-",
            ]
        )
    print_table(["sandbox", "code", "sandboxed by", "runs ok", "median inst/s", "range"], rows)
    for name in ("ref", "current"):
        for error in comparison[name]["errors"]:
            print(f"{name} failed: {error}")
    ratio = comparison["ratio_current_over_ref"]
    if ratio is None:
        print("current/ref: - (a side has no successful run)")
    else:
        verdict = "within 20%" if comparison["within_20pct"] else "NOT within 20%"
        print(f"current/ref: {ratio:.3f} ({verdict}; floor {comparison['floor']})")


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
    parser.add_argument(
        "--compare-sandbox-ref",
        metavar="GITREF",
        help="also measure the sandbox of this commit (e.g. 99eba7f) against the working tree's",
    )
    parser.add_argument(
        "--compare-rounds", type=int, default=3, help="interleaved runs per side to compare"
    )
    args = parser.parse_args(argv)
    if args.compare_sandbox_ref:
        try:
            resolve_commit(args.compare_sandbox_ref)
        except ValueError as exc:
            parser.error(f"--compare-sandbox-ref: {exc}")
    if args.compare_rounds < 1:
        parser.error("--compare-rounds must be at least 1")

    data_dir = args.grasp_dir or (
        Path(os.environ["AMORTIZED_GRASP_DIR"]) if os.environ.get("AMORTIZED_GRASP_DIR") else None
    )
    if data_dir is not None and not (data_dir / "grids").is_dir():
        parser.error(f"--grasp-dir {data_dir}: no grids/ folder there")
    sandbox = Sandbox()
    grasp_count = 200 if args.quick else 2000
    minigrid_count = 20 if args.quick else 100
    sandbox_count = 250 if args.quick else 2000
    environments: list[Environment] = [*grasp_environments(data_dir)]
    environments += [make_environment(e) for e in MINIGRID_ENVS]
    counts = {"GRASP": grasp_count} | dict.fromkeys(MINIGRID_ENVS, minigrid_count)

    result: dict[str, Any] = {
        "data": "published" if data_dir else "generated",
        "baselines": baselines(environments, counts, sandbox),
        "sandbox": sandbox_throughput(data_dir, sandbox_count, sandbox),
    }
    if args.compare_sandbox_ref:
        try:
            result["sandbox_comparison"] = compare_sandbox(
                args.compare_sandbox_ref, data_dir, sandbox_count, args.compare_rounds
            )
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:  # setup, not a side
            result["sandbox_comparison"] = {"gitref": args.compare_sandbox_ref, "error": str(exc)}
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
    comparison = result.get("sandbox_comparison")
    if comparison:
        print()
        print_sandbox_comparison(comparison)
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
        **(
            {"sandbox_ratio_vs_ref": comparison.get("ratio_current_over_ref")} if comparison else {}
        ),
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
