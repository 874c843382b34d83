"""MiniGrid: reproducible instances, JSON observations, trusted replays and the driver."""

import json

import pytest

pytest.importorskip("minigrid")

from amortized.errors import AmortizedError
from amortized.planners.environments import (
    MiniGridEnvironment,
    MiniGridError,
    UnknownEnvironmentError,
    make_environment,
)
from amortized.planners.environments.minigrid import ACTIONS, rollout_act

EMPTY = "MiniGrid-Empty-5x5-v0"
"""Agent at (1, 1) facing right, goal at (3, 3), max_steps 100, every seed."""
TO_GOAL = ["forward", "forward", "right", "forward", "forward"]


@pytest.fixture(scope="module")
def empty() -> MiniGridEnvironment:
    return MiniGridEnvironment(EMPTY)


@pytest.fixture(scope="module")
def doorkey() -> MiniGridEnvironment:
    return MiniGridEnvironment("MiniGrid-DoorKey-8x8-v0")


def test_reset_is_reproducible(doorkey):
    first = doorkey.instances(5, seed=10)
    again = doorkey.instances(5, seed=10)
    assert [i.observation for i in first] == [i.observation for i in again]
    assert [i.instance_id for i in first][:2] == [
        "MiniGrid-DoorKey-8x8-v0/10",
        "MiniGrid-DoorKey-8x8-v0/11",
    ]
    assert first[0].spec == {"env_id": "MiniGrid-DoorKey-8x8-v0", "seed": 10}
    assert len({json.dumps(i.observation) for i in first}) > 1


def test_observation_is_json_and_describes_the_state(doorkey):
    obs = doorkey.instance(3).observation
    assert json.loads(json.dumps(obs)) == obs
    assert (obs["width"], obs["height"]) == (8, 8)
    assert len(obs["grid"]) == 8
    assert all(len(row) == 8 for row in obs["grid"])
    assert obs["grid"][0] == "########"
    types = sorted(o["type"] for o in obs["objects"])
    assert types == ["door", "goal", "key"]
    door = next(o for o in obs["objects"] if o["type"] == "door")
    assert door["state"] == "locked"
    assert obs["grid"][door["pos"][1]][door["pos"][0]] == "L"
    key = next(o for o in obs["objects"] if o["type"] == "key")
    assert key["color"] == door["color"]
    x, y = obs["agent_pos"]
    assert obs["grid"][y][x] == "."
    assert obs["carrying"] is None
    assert obs["actions"] == ACTIONS
    assert obs["max_steps"] == 640
    assert obs["mission"] == "use the key to open the door and then get to the goal"


def test_hand_made_plan_reaches_the_goal(empty):
    inst = empty.instance(0)
    assert inst.observation["agent_pos"] == [1, 1]
    assert inst.observation["agent_dir"] == 0
    result = empty.evaluate(inst, TO_GOAL)
    assert result.success
    assert result.score == pytest.approx(1 - 0.9 * 5 / 100)
    assert result.actions_taken == 5
    assert result.events == ()


def test_names_and_numbers_mix(empty):
    result = empty.evaluate(empty.instance(1), [2, "Forward ", 1, "forward", 2])
    assert result.success


def test_actions_after_the_end_are_ignored(empty):
    result = empty.evaluate(empty.instance(0), [*TO_GOAL, "left", "left"])
    assert result.success
    assert result.actions_taken == 5
    assert result.events == ("actions after step 5 ignored (episode over; 7 given)",)


def test_failure_events(empty):
    result = empty.evaluate(empty.instance(0), ["left", "forward", "toggle", "pickup", "drop"])
    assert not result.success
    assert result.score == 0.0
    assert result.events == (
        "step 2: forward blocked by wall at (1, 0)",
        "step 3: toggle with no door in front (wall at (1, 0))",
        "step 4: pickup with wall in front at (1, 0)",
        "step 5: drop with nothing carried",
        "actions ran out after 5 without success, at (1, 1) facing ^",
    )


def test_locked_door_events(doorkey):
    from amortized.planners.policies import load_reference_policy

    inst = doorkey.instance(0)
    plan = load_reference_policy("minigrid_bfs")(inst.observation)
    toggle = plan.index("toggle")
    pickup = plan.index("pickup")
    # skip the pickup: the toggle then meets the door without its key
    without_key = plan[:pickup] + plan[pickup + 1 : toggle + 1]
    result = doorkey.evaluate(inst, without_key)
    assert any("toggle on the locked" in e and "without the" in e for e in result.events)


def test_step_limit(empty):
    result = empty.evaluate(empty.instance(0), ["left"] * 150)
    assert result.actions_taken == 100
    assert "hit the step limit (100) without success" in result.events[-1]


@pytest.mark.parametrize(
    "output", ["forward", None, ["forward", "jump"], ["forward", 7], [True], [2.0], {"a": 1}]
)
def test_invalid_output(empty, output):
    result = empty.evaluate(empty.instance(0), output)
    assert result.invalid_output is not None
    assert result.score == 0.0
    assert not result.success


def test_rollout_act_with_a_python_function(empty):
    inst = empty.instance(2)
    script = iter(TO_GOAL)
    seen = []

    def act(observation):
        seen.append(observation)
        return next(script)

    actions = rollout_act(act, inst.spec)
    assert actions == TO_GOAL
    assert seen[0] == inst.observation
    assert seen[1]["agent_pos"] == [2, 1]
    assert seen[1]["step_count"] == 1
    assert seen[3]["agent_dir"] == 1
    assert empty.evaluate(inst, actions).success
    assert rollout_act(lambda obs: None, inst.spec) == []
    assert rollout_act(lambda obs: "fly", inst.spec) == ["fly"]
    assert len(rollout_act(lambda obs: "left", inst.spec)) == 100


def test_closed_loop_driver_name_resolves():
    module, _, function = MiniGridEnvironment.closed_loop_driver.partition(":")
    assert getattr(__import__(module, fromlist=[function]), function) is rollout_act


def test_render_and_describe(doorkey):
    inst = doorkey.instance(0)
    text = doorkey.render(inst)
    assert "use the key to open the door" in text
    assert sum(text.count(arrow) for arrow in "><^v") >= 1
    traced = doorkey.render(inst, ["left", "forward"])
    assert "  1. left" in traced
    assert "reward: 0.0000" in traced
    prompt = doorkey.describe()
    for needle in ("solve(observation)", "agent_dir", '"toggle": 5', "locked door", "grid[y][x]"):
        assert needle in prompt


def test_make_environment_and_unknown_ids():
    env = make_environment("MiniGrid-Unlock-v0")
    assert isinstance(env, MiniGridEnvironment)
    assert env.signature == "MiniGrid-Unlock-v0"
    assert env.max_score == 1.0
    with pytest.raises(UnknownEnvironmentError, match="MiniGrid-DoorKey-8x8-v0") as caught:
        make_environment("MiniGrid-DoorKey-9x9-v0")
    assert isinstance(caught.value, AmortizedError)
    with pytest.raises(MiniGridError):
        make_environment("MiniGrid-Unlock-v0", size=9)
    with pytest.raises(MiniGridError):
        MiniGridEnvironment("MiniGrid-Nope-v0")


def test_instance_from_user_json(empty):
    inst = empty.instance_from_spec({"seed": 4}, "mine")
    assert inst.instance_id == "mine"
    assert inst.observation == empty.instance(4).observation
    assert empty.evaluate(inst, TO_GOAL).success
    for bad in ({"seed": -1}, {"seed": "4"}, {"seed": True}, {}, {"seed": 1, "env_id": "x"}):
        with pytest.raises(ValueError, match=r"seed|instance is for"):
            empty.instance_from_spec(bad)
