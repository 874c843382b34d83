"""Reference policy programs: shipped as source, stdlib only, and good (or bad) as advertised."""

import ast
import statistics
import sys

import pytest

from amortized.planners.environments import GraspEnvironment, GraspSettings
from amortized.planners.environments.grasp import published_greedy_answers
from amortized.planners.environments.grasp import rollout_act as grasp_rollout
from amortized.planners.environments.grasp_data import grid_from_rows
from amortized.planners.policies import (
    REFERENCE_POLICIES,
    UnknownPolicyError,
    load_reference_policy,
    reference_policy_source,
)
from tests.planners.test_grasp import GRASP_DIR, needs_data

EMPTY = "..........."


def run_source(name: str, entry: str = "solve"):
    """Execute the program text the way the sandbox does: a fresh namespace, no package."""
    namespace: dict[str, object] = {"__name__": "policy"}
    exec(compile(reference_policy_source(name), f"<{name}>", "exec"), namespace)
    return namespace[entry]


@pytest.mark.parametrize("name", REFERENCE_POLICIES)
def test_sources_are_standalone_stdlib_programs(name):
    source = reference_policy_source(name)
    tree = ast.parse(source)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            imported.add((node.module or "").split(".")[0])
    assert imported <= set(sys.stdlib_module_names), imported
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert {"solve", "act"} <= functions
    assert callable(load_reference_policy(name))
    assert callable(load_reference_policy(name, "act"))


def test_unknown_policy():
    with pytest.raises(UnknownPolicyError, match="grasp_greedy"):
        reference_policy_source("../../etc/passwd")
    with pytest.raises(ValueError, match="no nope"):
        load_reference_policy("random_policy", "nope")


# --- GRASP greedy -------------------------------------------------------------------------


def grasp_instance(rows: dict[int, str], **settings):
    env = GraspEnvironment(GraspSettings(**settings))
    return env, env.instance(grid_from_rows([rows.get(r, EMPTY) for r in range(11)]))


def test_greedy_skips_detours_that_cost_more_than_they_bring():
    solve = load_reference_policy("grasp_greedy")
    env, inst = grasp_instance({4: ".....E.....", 5: ".....A....."}, cost_per_step=0.3)
    assert solve(inst.observation) == []  # 1 unit for 4 actions: 1 - 1.2 < 0
    _, inst0 = grasp_instance({4: ".....E.....", 5: ".....A....."})
    assert solve(inst0.observation) == ["up", "take", "down", "drop"]
    # a row of 4 pays only when taken whole: 4 units in 13 actions at 0.3 = +0.1
    env, inst = grasp_instance({5: ".....AEEEE."}, cost_per_step=0.3)
    assert env.evaluate(inst, solve(inst.observation)).score == pytest.approx(0.1)


def test_greedy_goes_around_obstacles_and_respects_the_carry_limit():
    solve = load_reference_policy("grasp_greedy")
    env, inst = grasp_instance({3: ".....E.....", 4: "....OOO....", 5: ".....A....."})
    assert env.evaluate(inst, solve(inst.observation)).score == 1.0
    env, inst = grasp_instance({5: ".....AEEEE."}, carry_limit=2)
    plan = solve(inst.observation)
    result = env.evaluate(inst, plan)
    assert result.events == ()
    assert result.score == 4.0  # trips of 7 and 11 actions
    assert len(plan) <= 20


@pytest.mark.parametrize("settings", GraspSettings.published(), ids=lambda s: s.key)
def test_greedy_on_generated_grids(settings, monkeypatch):
    monkeypatch.delenv("AMORTIZED_GRASP_DIR", raising=False)
    env = GraspEnvironment(settings)
    instances = env.instances(20, seed=11)
    solve = run_source("grasp_greedy")
    results = [env.evaluate(i, solve(i.observation)) for i in instances]
    assert all(r.invalid_output is None and r.actions_taken <= 20 for r in results)
    assert all(r.score >= 0 for r in results)  # [] is always available
    random_solve = load_reference_policy("random_policy")
    random_mean = statistics.mean(
        env.evaluate(i, random_solve(i.observation)).score for i in instances
    )
    assert statistics.mean(r.score for r in results) > random_mean
    if settings.cost_per_step == 0:
        assert statistics.mean(r.score for r in results) >= 3


def test_greedy_closed_loop_matches_open_loop(monkeypatch):
    monkeypatch.delenv("AMORTIZED_GRASP_DIR", raising=False)
    env = GraspEnvironment(GraspSettings(movement=8, carry_limit=2))
    solve, act = load_reference_policy("grasp_greedy"), load_reference_policy("grasp_greedy", "act")
    for inst in env.instances(3, seed=2):
        open_loop = env.evaluate(inst, solve(inst.observation)).score
        closed_loop = env.evaluate(inst, grasp_rollout(act, inst.spec)).score
        assert closed_loop >= open_loop


@needs_data
@pytest.mark.parametrize("settings", GraspSettings.published(), ids=lambda s: s.key)
def test_greedy_beats_the_published_greedy(settings):
    env = GraspEnvironment(settings, data_dir=GRASP_DIR)
    instances = env.published_instances()[::50]
    published = published_greedy_answers(GRASP_DIR, settings)
    solve = load_reference_policy("grasp_greedy")
    ours = [env.evaluate(i, solve(i.observation)).score for i in instances]
    theirs = [env.evaluate(i, published[i.instance_id]).score for i in instances]
    assert statistics.mean(ours) > statistics.mean(theirs)
    assert sum(a < b - 1e-9 for a, b in zip(ours, theirs, strict=True)) <= len(ours) // 20


# --- MiniGrid BFS and random --------------------------------------------------------------

PAPER_ENVS = ["MiniGrid-DoorKey-8x8-v0", "MiniGrid-Unlock-v0", "MiniGrid-UnlockPickup-v0"]


@pytest.mark.parametrize("env_id", [*PAPER_ENVS, "MiniGrid-Empty-8x8-v0", "MiniGrid-FourRooms-v0"])
def test_bfs_solves_the_paper_environments(env_id):
    pytest.importorskip("minigrid")
    from amortized.planners.environments import MiniGridEnvironment

    env = MiniGridEnvironment(env_id)
    solve = run_source("minigrid_bfs")
    results = [env.evaluate(i, solve(i.observation)) for i in env.instances(20, seed=100)]
    assert all(r.invalid_output is None for r in results)
    assert sum(r.success for r in results) == 20, [r.events for r in results if not r.success]


@pytest.mark.parametrize("env_id", PAPER_ENVS)
def test_random_policy_mostly_fails(env_id):
    pytest.importorskip("minigrid")
    from amortized.planners.environments import MiniGridEnvironment

    env = MiniGridEnvironment(env_id)
    solve = run_source("random_policy")
    instances = env.instances(20, seed=100)
    plans = [solve(i.observation) for i in instances]
    assert plans == [solve(i.observation) for i in instances]  # seeded from the observation
    assert len(plans[0]) == instances[0].observation["max_steps"]
    results = [env.evaluate(i, p) for i, p in zip(instances, plans, strict=True)]
    assert all(r.invalid_output is None for r in results)
    assert sum(r.success for r in results) <= 4


def test_bfs_closed_loop():
    pytest.importorskip("minigrid")
    from amortized.planners.environments import MiniGridEnvironment
    from amortized.planners.environments.minigrid import rollout_act

    env = MiniGridEnvironment("MiniGrid-UnlockPickup-v0")
    act = run_source("minigrid_bfs", "act")
    for inst in env.instances(3, seed=7):
        actions = rollout_act(act, inst.spec)
        assert env.evaluate(inst, actions).success


def test_random_policy_grasp_actions_are_valid(monkeypatch):
    monkeypatch.delenv("AMORTIZED_GRASP_DIR", raising=False)
    env = GraspEnvironment(GraspSettings(movement=8))
    solve = load_reference_policy("random_policy")
    for inst in env.instances(5):
        plan = solve(inst.observation)
        assert len(plan) == 20
        assert env.evaluate(inst, plan).invalid_output is None


@pytest.mark.parametrize(
    ("env_id", "policy"),
    [("GRASP", "grasp_greedy"), ("MiniGrid-UnlockPickup-v0", "minigrid_bfs")],
)
def test_reference_policies_run_in_the_sandbox(env_id, policy, monkeypatch):
    """Open and closed loop: the driver's imports must happen before the sandbox's guard."""
    sandbox = pytest.importorskip("amortized.planners.sandbox")
    if env_id != "GRASP":
        pytest.importorskip("minigrid")
    monkeypatch.delenv("AMORTIZED_GRASP_DIR", raising=False)
    from amortized.planners.environments import make_environment

    env = make_environment(env_id)
    instances = env.instances(3, seed=4)
    source = reference_policy_source(policy)
    box = sandbox.Sandbox()
    solved = box.run(source, [i.observation for i in instances])
    looped = box.run(
        source, [i.spec for i in instances], entrypoint="act", driver=env.closed_loop_driver
    )
    for inst, open_loop, closed_loop in zip(instances, solved.results, looped.results, strict=True):
        assert open_loop.error is None, open_loop.error
        assert closed_loop.error is None, closed_loop.error
        assert env.evaluate(inst, open_loop.value).success
        assert env.evaluate(inst, closed_loop.value).success
