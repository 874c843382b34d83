"""The code-policy planner with the real SmolLM2-135M-Instruct as its LLM, through the live
server: the IPP loop (write a program, run it in the sandbox, refine on the feedback) over
the OpenAI-compatible API, and one ``POST /v1/amortized/planners/solve`` planned by the
server's own engine.

A 135M model does not write a working MiniGrid policy in 128 tokens (at temperature 0 it
writes a fixed action list it never returns, and repeats it when refining), so nothing here
asks for success. The tests assert what holds whatever
the model writes: the loop completes, every LLM call and token is accounted for, the scores
reported are the scores of the outcomes, and a program is only offered for reuse (where its
LLM cost would be amortized) when it met the validation bar.
"""

from collections.abc import Sequence
from typing import Any

import pytest

from amortized.llm import OpenAICompatibleBackend
from amortized.planners.cost import Prices
from amortized.planners.environments import make_environment
from amortized.planners.evaluation import EvaluationReport, OutcomeStatus
from amortized.planners.ipp import PlannerBudget, PlannerOptions, RoundRecord, Strategy
from amortized.planners.library import ProgramLibrary
from amortized.planners.solver import SolveOptions, solve_task
from amortized.serving.process import ServerProcess
from tests.conftest import API_KEY, SMOLLM2, post_route

pytestmark = pytest.mark.server

ENV = "MiniGrid-Empty-5x5-v0"
"""The smallest MiniGrid task: a 3x3 room, walk to the goal."""
INSTANCES = 3
COMPLETION_TOKENS = 128
MIN_SUCCESS_RATE = 0.5
PRICES = Prices(prompt_per_million=2.0, completion_per_million=8.0)
"""Made-up prices, so the dollar accounting is checked too."""


def dollars(prompt_tokens: int, completion_tokens: int) -> float:
    """What PRICES make of these tokens, computed here rather than by the code under test."""
    return (
        prompt_tokens * PRICES.prompt_per_million
        + completion_tokens * PRICES.completion_per_million
    ) / 1e6


def check_report_matches_outcomes(report: EvaluationReport, instances: int) -> None:
    """The aggregates a planner reports are those of its per-instance outcomes."""
    outcomes = report.outcomes
    assert len(outcomes) == instances
    assert sum(report.counts.values()) == instances
    assert report.sandbox_mode in ("bubblewrap", "weak")
    for status in OutcomeStatus:
        assert report.counts.get(status.value, 0) == sum(o.status is status for o in outcomes)
    for outcome in outcomes:
        assert 0.0 <= outcome.score <= 1.0
        assert outcome.success == (outcome.status is OutcomeStatus.OK)
        if outcome.status is OutcomeStatus.ERROR:
            assert outcome.error
    assert report.mean_score == pytest.approx(sum(o.score for o in outcomes) / instances)
    assert report.success_rate == pytest.approx(sum(o.success for o in outcomes) / instances)


def describe(rounds: Sequence[RoundRecord | dict[str, Any]]) -> str:
    lines = []
    for r in rounds:
        data = r if isinstance(r, dict) else r.__dict__
        error = (data["error"] or "").splitlines()[:1]
        lines.append(
            f"round {data['index'] + 1} [{data['stage']}] program {data['program_id']} "
            f"score {data['mean_score']} success {data['success_rate']} "
            f"tokens {data['prompt_tokens']}+{data['completion_tokens']}"
            + (f" {data['wall_s']:.1f} s" if "wall_s" in data else "")
            + (f" error: {error[0]}" if error else "")
        )
    return "\n".join(lines)


async def test_ipp_loop_with_smollm2_through_the_server(smollm2_server: ServerProcess, tmp_path):
    env = make_environment(ENV)
    instances = env.instances(INSTANCES, seed=0)
    options = SolveOptions(
        planner=PlannerOptions(
            strategy=Strategy.REFINE,
            examples=1,
            budget=PlannerBudget(rounds=2, completion_tokens=COMPLETION_TOKENS),
        ),
        train_instances=INSTANCES,
        reuse=False,
        min_success_rate=MIN_SUCCESS_RATE,
        min_validated_instances=INSTANCES,
        prices=PRICES,
    )
    library = ProgramLibrary(tmp_path / "library")
    seen: list[RoundRecord] = []
    backend = OpenAICompatibleBackend(smollm2_server.base_url, API_KEY, SMOLLM2)
    try:
        report = await solve_task(
            env,
            instances,
            backend=backend,
            options=options,
            library=library,
            model_name=SMOLLM2,
            on_round=seen.append,
        )
    finally:
        await backend.close()

    planning = report.planning
    assert planning is not None
    assert not report.reused
    rounds = planning.rounds
    print(f"\n{describe(rounds)}\nstatus {report.status}, stopped {planning.stopped}")
    if report.program is not None and report.evaluation is not None:
        errors = {o.error.splitlines()[-1] for o in report.evaluation.outcomes if o.error}
        print(f"program {report.program.program_id}:\n{report.program.source}")
        print(f"outcomes {report.evaluation.counts}, errors {sorted(errors)}")
    assert rounds == seen  # every round was reported as it finished
    assert [r.index for r in rounds] == list(range(len(rounds)))
    assert rounds[0].stage == "initial"
    # No token or time budget and a 4,096-token context: a round is only cut short by a
    # program that solves everything (MiniGrid knows its optimum), else both rounds run.
    assert planning.stopped in ("rounds", "solved")
    if planning.stopped == "rounds":
        assert [r.stage for r in rounds] == ["initial", "refine"]
        # the refinement sees the first reply and its feedback: a longer conversation
        assert rounds[1].prompt_tokens > rounds[0].prompt_tokens
    else:
        assert rounds[-1].success_rate == 1.0

    # Every call and token is on the bill, and spread honestly over the instances.
    usage = report.usage
    assert usage.calls == len(rounds) == planning.usage.calls
    assert usage.prompt_tokens == sum(r.prompt_tokens for r in rounds)
    assert usage.completion_tokens == sum(r.completion_tokens for r in rounds)
    for r in rounds:
        assert r.prompt_tokens > 300  # the environment's rules and one rendered instance
        assert 0 < r.completion_tokens <= COMPLETION_TOKENS
    cost = report.cost
    assert cost.usage == usage
    assert cost.instances == INSTANCES
    assert cost.tokens_per_instance == pytest.approx(usage.total_tokens / INSTANCES)
    assert cost.calls_per_instance == pytest.approx(usage.calls / INSTANCES)
    assert cost.dollars == pytest.approx(dollars(usage.prompt_tokens, usage.completion_tokens))
    assert cost.dollars_per_instance == pytest.approx(cost.dollars / INSTANCES)

    # Each round either found no program (and says why) or has the program's real scores.
    for r in rounds:
        if r.program_id is None:
            assert r.error
            assert r.mean_score is None
            assert r.success_rate is None
        else:
            assert r.mean_score is not None
            assert r.success_rate is not None
            assert 0.0 <= r.mean_score <= 1.0
            assert sum(r.counts.values()) == INSTANCES

    stored = library.entries(env.signature)
    validated = library.best(
        env.signature, min_success_rate=MIN_SUCCESS_RATE, min_instances=INSTANCES
    )
    if report.program is None:
        # what "no valid program" looks like: no round yielded a program that parses
        assert report.status == "no_program"
        assert all(r.program_id is None for r in rounds)
        assert planning.best_report is None
        assert report.evaluation is None
        assert stored == []
        assert validated is None
    else:
        assert report.status == "planned"
        program = report.program
        scored = [r for r in rounds if r.program_id is not None]
        assert program.program_id in {r.program_id for r in scored}
        assert program.mean_score == max(r.mean_score or 0.0 for r in scored)
        assert program.model == SMOLLM2
        assert program.instances_evaluated == INSTANCES
        assert report.evaluation is not None
        check_report_matches_outcomes(report.evaluation, INSTANCES)
        assert planning.best_report is not None
        if planning.best_report.load_error is None:
            assert program.program_id in {e.program_id for e in stored}
        # Reuse (where the planning cost is amortized) only for a program that met the bar.
        if program.success_rate >= MIN_SUCCESS_RATE:
            assert validated is not None
        else:
            assert validated is None
    print(f"validated for reuse: {validated is not None}")


def test_route_plans_with_the_served_model(smollm2_server: ServerProcess) -> None:
    """One ``direct`` round planned by the server's own engine; a token budget of the
    prompt (about 740 tokens without an example) plus ~100 keeps the program short."""
    body = {
        "task": {"env": ENV},
        "generate": {"count": INSTANCES, "seed": 0},
        "strategy": "direct",
        "examples": 0,
        "max_tokens": 850,
        "reuse": False,
        "train_instances": INSTANCES,
        "prompt_price_per_million": PRICES.prompt_per_million,
        "completion_price_per_million": PRICES.completion_per_million,
    }
    result = post_route(smollm2_server, "planners/solve", body)
    print(f"\n{describe(result['rounds'])}\nstatus {result['status']}")
    print(f"program {result['program_id']}:\n{result['program']}")
    errors = {o["error"].splitlines()[-1] for o in result["results"] if o["error"]}
    print(f"outcomes {result['counts']}, errors {sorted(errors)}")
    assert result["signature"] == ENV
    assert result["stopped"] == "strategy"
    assert len(result["rounds"]) == 1
    [first] = result["rounds"]
    cost = result["cost"]
    assert cost["llm_calls"] == 1
    assert cost["prompt_tokens"] == first["prompt_tokens"] > 300
    assert cost["completion_tokens"] == first["completion_tokens"]
    assert 0 < first["completion_tokens"] <= 850 - first["prompt_tokens"]
    assert cost["tokens_per_instance"] == pytest.approx(
        (cost["prompt_tokens"] + cost["completion_tokens"]) / INSTANCES
    )
    assert cost["dollars"] == pytest.approx(
        dollars(cost["prompt_tokens"], cost["completion_tokens"])
    )
    assert cost["dollars_per_instance"] == pytest.approx(cost["dollars"] / INSTANCES)
    if result["status"] == "no_program":
        assert first["error"]
        assert first["program_id"] is None
        assert result["program"] is None
        assert result["results"] == []
        assert result["mean_score"] is None
    else:
        assert result["status"] == "planned"
        assert result["program_id"] == first["program_id"]
        assert result["program"]
        outcomes = result["results"]
        assert len(outcomes) == INSTANCES
        assert sum(result["counts"].values()) == INSTANCES
        scores = [o["score"] for o in outcomes]
        assert result["mean_score"] == pytest.approx(sum(scores) / INSTANCES)
        assert result["success_rate"] == pytest.approx(
            sum(o["success"] for o in outcomes) / INSTANCES
        )
        for outcome in outcomes:
            assert outcome["success"] == (outcome["status"] == "ok")
            if outcome["status"] == "error":
                assert outcome["error"]
