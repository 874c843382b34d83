"""The IPP loop: driven by a scripted stand-in model (bug → feedback → fix → keep the best),
and end to end against the real tiny-model server, whose garbage must be handled cleanly."""

import pytest

from amortized.llm import OpenAICompatibleBackend
from amortized.planners.environments import make_environment
from amortized.planners.ipp import PlannerBudget, PlannerOptions, ProgramPlanner, Strategy
from amortized.planners.library import ProgramLibrary, program_id
from amortized.planners.policies import reference_policy_source
from amortized.planners.sandbox import Sandbox
from amortized.planners.solver import SolveOptions, solve_task
from tests.conftest import API_KEY
from tests.planners.scripted_llm import serve_scripted

BUGGY = """\
Here is a first attempt.
```python
def solve(observation):
    cells = observation["energy_cells"]   # wrong key
    return ["take"] * len(cells)
```
"""
WORSE = "```python\ndef solve(observation):\n    return []\n```"


def fixed() -> str:
    return f"I fixed the key error:\n```python\n{reference_policy_source('grasp_greedy')}```"


@pytest.fixture(scope="module")
def grasp():
    return make_environment("GRASP", movement=4, carry_limit=2, cost_per_step=0.0)


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox()


async def test_refinement_fixes_the_bug_and_keeps_the_best(grasp, sandbox, tmp_path):
    instances = grasp.instances(12, seed=3)
    library = ProgramLibrary(tmp_path)
    with serve_scripted([BUGGY, fixed(), WORSE]) as (llm, base_url):
        backend = OpenAICompatibleBackend(base_url, model="scripted")
        planner = ProgramPlanner(
            backend,
            grasp,
            options=PlannerOptions(strategy=Strategy.REFINE, budget=PlannerBudget(rounds=3)),
            sandbox=sandbox,
            library=library,
        )
        result = await planner.plan(instances)
        await backend.close()
    assert len(llm.requests) == 3
    first, second, third = result.rounds
    assert first.counts["error"] == len(instances)
    # the feedback that produced the fix names the bug
    assert "KeyError" in llm.prompts[1]
    assert "energy_cells" in llm.prompts[1]
    assert second.mean_score is not None
    assert first.mean_score == 0.0
    assert second.mean_score > 0.5
    assert second.success_rate == 1.0
    assert third.mean_score == 0.0
    # scores are not monotone: the best program is kept, not the last
    assert result.best is not None
    assert result.best.program_id == program_id(extract_fixed())
    assert result.stopped == "rounds"
    assert result.usage.calls == 3
    assert result.usage.prompt_tokens > 0
    assert library.best(grasp.signature) == result.best


def extract_fixed() -> str:
    from amortized.planners.codegen import extract_program

    return extract_program(fixed())


async def test_library_reuse_needs_no_llm_call(grasp, sandbox, tmp_path):
    library = ProgramLibrary(tmp_path)
    instances = grasp.instances(30, seed=5)
    options = SolveOptions(
        planner=PlannerOptions(strategy=Strategy.DIRECT),
        train_instances=10,
        min_validated_instances=10,
    )
    with serve_scripted([fixed()]) as (llm, base_url):
        backend = OpenAICompatibleBackend(base_url, model="scripted")
        planned = await solve_task(
            grasp, instances, backend=backend, options=options, library=library, sandbox=sandbox
        )
        reused = await solve_task(
            grasp,
            grasp.instances(50, seed=9),
            backend=backend,
            options=options,
            library=library,
            sandbox=sandbox,
        )
        await backend.close()
    assert len(llm.requests) == 1
    assert planned.status == "planned"
    assert reused.status == "reused"
    assert reused.program == planned.program
    assert reused.usage.calls == 0
    assert reused.cost.tokens_per_instance == 0
    assert planned.evaluation is not None
    assert len(planned.evaluation.outcomes) == 30
    # the planning cost is spread over every instance served, not only the training ones
    assert planned.cost.tokens_per_instance == pytest.approx(planned.usage.total_tokens / 30)


async def test_curriculum_adds_one_constraint_per_turn(grasp, sandbox):
    with serve_scripted([fixed()]) as (llm, base_url):
        backend = OpenAICompatibleBackend(base_url, model="scripted")
        planner = ProgramPlanner(
            backend,
            grasp,
            options=PlannerOptions(strategy=Strategy.CURRICULUM, budget=PlannerBudget(rounds=10)),
            sandbox=sandbox,
        )
        result = await planner.plan(grasp.instances(5, seed=1))
        await backend.close()
    assert len(result.rounds) == 4
    assert "ignore the carry limit" in llm.prompts[0]
    assert "Now respect obstacles" in llm.prompts[1]
    assert "carry limit" in llm.prompts[2]
    assert "cost per step" in llm.prompts[3]


async def test_pseudocode_strategy_shows_the_outline_and_token_budget_stops(grasp, sandbox):
    with serve_scripted([WORSE]) as (llm, base_url):
        backend = OpenAICompatibleBackend(base_url, model="scripted")
        planner = ProgramPlanner(
            backend,
            grasp,
            options=PlannerOptions(
                strategy=Strategy.REFINE,
                pseudocode=True,
                budget=PlannerBudget(rounds=10, max_tokens=4000),
            ),
            sandbox=sandbox,
        )
        result = await planner.plan(grasp.instances(3, seed=1))
        await backend.close()
    assert "breadth-first" in llm.prompts[0]
    assert result.stopped == "tokens"
    assert result.usage.total_tokens <= 4000
    assert len(llm.requests) < 10


async def test_minigrid_closed_loop_program(sandbox):
    env = make_environment("MiniGrid-DoorKey-8x8-v0")
    script = [f"```python\n{reference_policy_source('minigrid_bfs')}```"]
    with serve_scripted(script) as (_llm, base_url):
        backend = OpenAICompatibleBackend(base_url, model="scripted")
        planner = ProgramPlanner(
            backend, env, options=PlannerOptions(budget=PlannerBudget(rounds=3)), sandbox=sandbox
        )
        result = await planner.plan(env.instances(5, seed=0))
        await backend.close()
    assert result.stopped == "solved"  # every instance reached the goal: no more rounds
    assert len(result.rounds) == 1
    assert result.best is not None
    assert result.best.success_rate == 1.0


@pytest.mark.server
async def test_real_tiny_model_garbage_is_handled(live_server, grasp, sandbox):
    backend = OpenAICompatibleBackend(live_server.base_url, API_KEY, "tiny")
    planner = ProgramPlanner(
        backend,
        grasp,
        options=PlannerOptions(
            strategy=Strategy.REFINE, budget=PlannerBudget(rounds=2, completion_tokens=128)
        ),
        sandbox=sandbox,
    )
    result = await planner.plan(grasp.instances(4, seed=0))
    await backend.close()
    assert 1 <= len(result.rounds) <= 2
    assert result.usage.calls == len(result.rounds) or result.stopped == "context"
    for record in result.rounds:
        # each round either produced no program (with the reason) or an evaluated one
        assert record.error is not None or record.mean_score is not None
    if result.best is None:
        assert all(r.program_id is None or r.mean_score is not None for r in result.rounds)
