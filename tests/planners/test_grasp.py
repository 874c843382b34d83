"""GRASP: hand-worked scoring, the generator, the published files, prompts and the driver."""

import json
import os
import statistics
import time
from pathlib import Path

import pytest

from amortized.errors import AmortizedError
from amortized.planners.environments import (
    EpisodeResult,
    GraspDataError,
    GraspEnvironment,
    GraspSettings,
    GraspSettingsError,
    Instance,
    UnknownEnvironmentError,
    make_environment,
)
from amortized.planners.environments.grasp import rollout_act
from amortized.planners.environments.grasp_data import (
    CATEGORIES,
    DATA_DIR_ENV,
    format_ascii_grid,
    generate_grid,
    grid_from_rows,
    parse_ascii_grid,
)
from amortized.planners.environments.grasp_data import GraspGrid as Grid

GRASP_DIR = Path(
    os.environ.get(DATA_DIR_ENV) or Path(__file__).resolve().parents[3] / "shared/data/grasp"
)
needs_data = pytest.mark.skipif(
    not (GRASP_DIR / "grids").is_dir(), reason=f"published GRASP data not at {GRASP_DIR}"
)

EMPTY = "..........."


def make(rows: dict[int, str], **settings: float) -> tuple[GraspEnvironment, Instance]:
    """An 11x11 grid from the rows given (others empty) and an environment for ``settings``."""
    grid = grid_from_rows([rows.get(r, EMPTY) for r in range(11)])
    env = GraspEnvironment(GraspSettings(**settings))  # type: ignore[arg-type]
    return env, env.instance(grid, "hand")


# --- hand-worked scoring ---------------------------------------------------------------


def test_collect_two_units_and_drop_on_start_scores_two():
    env, inst = make({3: ".....E.....", 4: ".....E.....", 5: ".....A....."})
    result = env.evaluate(inst, ["up", "take", "up", "take", "down", "down", "drop"])
    assert result == EpisodeResult("hand", 2.0, True, 7, ())


def test_cost_per_step_charges_every_action_taken():
    env, inst = make({3: ".....E.....", 4: ".....E.....", 5: ".....A....."}, cost_per_step=0.3)
    result = env.evaluate(inst, ["up", "take", "up", "take", "down", "down", "drop"])
    assert result.score == pytest.approx(2 - 0.3 * 7)
    assert not result.success  # -0.1: success means score > 0
    one = env.evaluate(inst, ["up", "take", "down", "drop"])
    assert one.score == pytest.approx(1 - 1.2)


def test_obstacle_blocks_the_move_but_is_charged():
    env, inst = make({3: ".....E.....", 4: ".....O.....", 5: ".....A....."}, cost_per_step=0.3)
    result = env.evaluate(inst, ["up", "take", "drop"])
    assert result.actions_taken == 3
    assert result.score == pytest.approx(-0.9)
    assert result.events[0] == "step 1: 'up' blocked by obstacle at (4, 5)"
    assert result.events[1] == "step 2: 'take' on empty cell (5, 5)"
    assert result.events[2] == "step 3: 'drop' with nothing carried at (5, 5)"


def test_going_around_an_obstacle():
    env, inst = make({3: ".....E.....", 4: ".....O.....", 5: ".....A....."})
    plan = ["right", "up", "up", "left", "take", "right", "down", "down", "left", "drop"]
    assert env.evaluate(inst, plan).score == 1.0


def test_carry_limit_two_makes_the_third_take_a_no_op():
    rows = {5: ".....AEEE.."}
    plan = ["right", "take", "right", "take", "right", "take", "left", "left", "left", "drop"]
    env, inst = make(rows, carry_limit=2)
    limited = env.evaluate(inst, plan)
    assert limited.score == 2.0
    assert limited.events == ("step 6: 'take' at carry limit 2",)
    env100, inst100 = make(rows)
    assert env100.evaluate(inst100, plan).score == 3.0


def test_diagonal_moves_at_the_edges_and_in_four_direction_mode():
    rows = {0: "A..........", 1: ".E........."}
    plan = ["upleft", "downleft", "downright", "take", "upleft", "drop"]
    env, inst = make(rows, movement=8)
    result = env.evaluate(inst, plan)
    assert result.score == 1.0
    assert result.events == (
        "step 1: 'upleft' blocked by the grid edge at (0, 0)",
        "step 2: 'downleft' blocked by the grid edge at (0, 0)",
    )
    env4, inst4 = make(rows, movement=4)
    invalid = env4.evaluate(inst4, plan)
    assert invalid.score == 0.0
    assert not invalid.success
    assert invalid.invalid_output is not None
    assert "'upleft'" in invalid.invalid_output
    assert "movement 8" in invalid.invalid_output


def test_diagonal_slips_between_two_obstacles():
    env, inst = make({4: ".....OE....", 5: ".....AO...."}, movement=8)
    assert env.evaluate(inst, ["upright", "take", "downleft", "drop"]).score == 1.0


def test_twenty_action_cap_ignores_and_does_not_charge_later_actions():
    env, inst = make({4: ".....E.....", 5: ".....A....."}, cost_per_step=0.3)
    plan = ["up", "take", *(["left", "right"] * 9), "down", "drop", "drop"]
    assert len(plan) == 23
    result = env.evaluate(inst, plan)
    assert result.actions_taken == 20
    assert result.score == pytest.approx(-6.0)  # the down+drop came too late
    assert "actions 21+ ignored (23 returned)" in result.events
    assert "ended at (4, 5) carrying 1 units not dropped on the start" in result.events


def test_dropped_units_can_be_taken_again_one_at_a_time():
    rows = {3: ".....E.....", 4: ".....E.....", 5: ".....A....."}
    env, inst = make(rows)
    plan = ["up", "take", "up", "take", "drop", "take", "take", "take", "down", "down", "drop"]
    result = env.evaluate(inst, plan)
    assert result.score == 2.0
    assert result.events == (
        "step 5: dropped 2 units at (3, 5), not on the start (5, 5)",
        "step 8: 'take' on empty cell (3, 5)",
    )


def test_units_dropped_on_start_count_and_can_be_taken_back():
    env, inst = make({4: ".....E.....", 5: ".....A....."})
    assert env.evaluate(inst, ["up", "take", "down", "drop", "take"]).score == 0.0
    assert env.evaluate(inst, ["up", "take", "down", "drop", "take", "drop"]).score == 1.0


def test_action_names_are_normalized():
    env, inst = make({4: ".....E.....", 5: ".....A....."}, movement=8)
    assert env.evaluate(inst, ("UP ", "Take", " down", "DROP")).score == 1.0
    assert env.evaluate(inst, ["Up-Left", "down_right"]).invalid_output is None


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("up", "expected a list"),
        (None, "expected a list"),
        ({"actions": ["up"]}, "expected a list"),
        (["up", 3], "not a string"),
        (["up", "wait"], "'wait' is not one of"),
        (["up", ["down"]], "not a string"),
    ],
)
def test_invalid_output_scores_zero(output, reason):
    env, inst = make({4: ".....E.....", 5: ".....A....."}, cost_per_step=0.3)
    result = env.evaluate(inst, output)
    assert result.score == 0.0
    assert not result.success
    assert result.actions_taken == 0
    assert result.invalid_output is not None
    assert reason in result.invalid_output


def test_empty_plan_scores_zero_and_fails():
    env, inst = make({4: ".....E.....", 5: ".....A....."}, cost_per_step=0.3)
    assert env.evaluate(inst, []) == EpisodeResult("hand", 0.0, False, 0, ())


def test_events_are_capped():
    env, inst = make({5: ".....A....."}, carry_limit=2)
    result = env.evaluate(inst, ["take"] * 30)
    assert len(result.events) <= 10
    assert result.events[-2] == "... 13 more step events"
    assert result.events[-1] == "actions 21+ ignored (30 returned)"


def test_scoring_is_fast(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    env = GraspEnvironment(GraspSettings(movement=8, cost_per_step=0.3))
    instances = env.instances(50, seed=3)
    plan = ["up", "take", "downright", "take", "left", "drop", "upleft", "take", "down"] * 2
    start = time.perf_counter()
    for _ in range(20):
        for inst in instances:
            env.evaluate(inst, plan)
    per_call = (time.perf_counter() - start) / 1000
    assert per_call < 300e-6, f"{per_call * 1e6:.0f} us per evaluate"


# --- settings, observation and text ------------------------------------------------------


def test_signatures_and_settings():
    assert GraspEnvironment().signature == "GRASP/move4-carry100-cost0"
    env = GraspEnvironment(GraspSettings(movement=8, carry_limit=2, cost_per_step=0.3))
    assert env.signature == "GRASP/move8-carry2-cost0.3"
    assert len(env.action_names) == 10
    assert GraspEnvironment().action_names == ("up", "down", "left", "right", "take", "drop")
    assert len({s.key for s in GraspSettings.published()}) == 8
    with pytest.raises(GraspSettingsError, match="movement must be 4 or 8"):
        GraspSettings(movement=6)
    with pytest.raises(GraspSettingsError):
        GraspSettings(carry_limit=0)
    with pytest.raises(GraspSettingsError):
        GraspSettings(cost_per_step=-1)


def test_make_environment():
    env = make_environment("grasp", movement=8, carry_limit=2, cost_per_step=0.3)
    assert isinstance(env, GraspEnvironment)
    assert env.signature == "GRASP/move8-carry2-cost0.3"
    assert make_environment("GRASP").signature == "GRASP/move4-carry100-cost0"
    with pytest.raises(GraspSettingsError, match="unknown GRASP settings"):
        make_environment("GRASP", moves=8)
    with pytest.raises(UnknownEnvironmentError, match="GRASP") as caught:
        make_environment("Sokoban")
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, AmortizedError)


def test_observation_is_json_and_consistent():
    env, inst = make({3: "O....E.....", 5: ".....A....."}, movement=8, carry_limit=2)
    obs = inst.observation
    assert json.loads(json.dumps(obs)) == obs
    assert obs["grid"][3] == "O....E....."
    assert obs["grid"][5][5] == "A"
    assert obs["start"] == obs["position"] == [5, 5]
    assert obs["energy"] == [[3, 5]]
    assert obs["obstacles"] == [[3, 0]]
    assert (obs["rows"], obs["cols"], obs["movement"], obs["carry_limit"]) == (11, 11, 8, 2)
    assert obs["cost_per_step"] == 0.0
    assert obs["max_actions"] == obs["actions_left"] == 20
    assert obs["carrying"] == obs["stored"] == 0
    assert obs["actions"] == list(env.action_names)
    assert json.loads(json.dumps(inst.spec)) == inst.spec


def test_render_and_describe():
    env, inst = make({3: ".....E.....", 4: ".....O.....", 5: ".....A....."})
    text = env.render(inst)
    assert " 4  . . . . . O . . . . ." in text
    assert " 5  . . . . . A . . . . ." in text
    traced = env.render(inst, ["up", "right", "up", "up", "left", "take"])
    assert (
        " 1. up        at (5, 5) carrying 0, start holds 0  <- 'up' blocked by obstacle at (4, 5)"
        in traced
    )
    assert " 6. take      at (3, 5) carrying 1, start holds 0" in traced
    assert " 3  . . . . . @ * . . . ." in traced
    assert " 4  . . . . . O * . . . ." in traced
    assert "score: 0 on start - 0 x 6 actions = 0" in traced
    assert "invalid actions" in env.render(inst, ["jump"])
    prompt = env.describe()
    for needle in ("solve(observation)", "act(observation)", '"take"', "cost_per_step", "[r, c]"):
        assert needle in prompt


# --- closed-loop driver ------------------------------------------------------------------


def test_rollout_act_feeds_the_current_state():
    env, inst = make({3: ".....E.....", 4: ".....E.....", 5: ".....A....."}, cost_per_step=0.3)
    script = iter(["up", "take", "up", "take", "down", "down", "drop", None])
    seen = []

    def act(observation):
        seen.append(json.loads(json.dumps(observation)))
        return next(script)

    actions = rollout_act(act, inst.spec)
    assert actions == ["up", "take", "up", "take", "down", "down", "drop"]
    assert seen[0] == inst.observation
    assert seen[2]["position"] == [4, 5]
    assert seen[2]["carrying"] == 1
    assert seen[2]["energy"] == [[3, 5]]
    assert seen[2]["grid"][4][5] == "."
    assert seen[7]["stored"] == 2
    assert seen[7]["actions_left"] == 13
    assert env.evaluate(inst, actions).score == pytest.approx(2 - 2.1)


def test_rollout_act_stops_at_the_budget_and_at_invalid_actions():
    env, inst = make({5: ".....A....."})
    assert len(rollout_act(lambda obs: "left", inst.spec)) == 20
    assert rollout_act(lambda obs: "fly", inst.spec) == ["fly"]
    assert env.evaluate(inst, rollout_act(lambda obs: "fly", inst.spec)).invalid_output


def test_closed_loop_driver_name_resolves():
    module, _, function = GraspEnvironment.closed_loop_driver.partition(":")
    assert getattr(__import__(module, fromlist=[function]), function) is rollout_act


# --- generator -----------------------------------------------------------------------------


def test_generator_is_reproducible():
    assert generate_grid(7) == generate_grid(7)
    assert generate_grid(7) != generate_grid(8)
    kinds = {"start": "outer", "energy": "spiral", "obstacle": "block"}
    assert generate_grid(3, **kinds) == generate_grid(3, **kinds)
    assert generate_grid(3, **kinds).category == "outer_spiral_block"


def _grids(category: str, count: int = 60) -> list[Grid]:
    start, energy, obstacle = category.split("_")
    return [generate_grid(i, start=start, energy=energy, obstacle=obstacle) for i in range(count)]


@pytest.mark.parametrize("category", CATEGORIES)
def test_generated_grids_are_well_formed(category):
    for grid in _grids(category, 30):
        assert grid_from_rows(grid.rows).start == grid.start
        r, c = grid.start
        edge = min(r, c, 10 - r, 10 - c)
        assert edge >= 3 if category.startswith("inner") else edge <= 2
        if category.endswith("free"):
            assert not grid.obstacles
        assert 5 <= len(grid.energy) <= 100


def test_generator_distributions_look_like_the_papers():
    def mean(category: str, what: str) -> float:
        return statistics.mean(len(getattr(g, what)) for g in _grids(category))

    # published means: ~59 random/upDown/leftRight, ~30 cluster, ~40 spiral; ~12 obstacles
    assert 50 < mean("inner_random_free", "energy") < 70
    assert 22 < mean("outer_cluster_free", "energy") < 38
    assert 30 < mean("inner_spiral_free", "energy") < 48
    assert 8 < mean("inner_random_block", "obstacles") < 16
    # upDown skews by half: the top half follows p, the bottom 1 - p
    skews = []
    for grid in _grids("inner_upDown_free", 80):
        top = sum(row.count("E") for row in grid.rows[:5])
        bottom = sum(row.count("E") for row in grid.rows[6:])
        skews.append((grid.energy_probability < 0.5) == (top < bottom))
    assert sum(skews) / len(skews) > 0.8
    for grid in _grids("inner_leftRight_free", 20):
        assert all(row[:5] for row in grid.rows)


def test_generated_instances_without_data(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    env = GraspEnvironment(GraspSettings(movement=8))
    first = env.instances(40, seed=5)
    assert [i.instance_id for i in first] == [i.instance_id for i in env.instances(40, seed=5)]
    assert [i.observation for i in first] == [i.observation for i in env.instances(40, seed=5)]
    assert len({i.instance_id for i in first}) == 40
    assert {i.instance_id.split("/")[0] for i in first} == set(CATEGORIES)
    assert first[0].observation != env.instances(1, seed=6)[0].observation
    with pytest.raises(GraspDataError, match=DATA_DIR_ENV):
        env.published_instances()


def test_missing_data_dir_names_the_option(tmp_path):
    env = GraspEnvironment(data_dir=tmp_path / "nowhere")
    with pytest.raises(GraspDataError, match="AMORTIZED_GRASP_DIR"):
        env.instances(3)


# --- the published ASCII format ------------------------------------------------------------

PUBLISHED_STYLE = (
    "    0   1   2   3   4   5   6   7   8   9   10 \n"
    + "  +---+---+---+---+---+---+---+---+---+---+---+\n"
    + "".join(
        f"{r:>2}|{row}\n  +---+---+---+---+---+---+---+---+---+---+---+\n"
        for r, row in enumerate(
            ["   |" * 11] * 4
            + ["   | O |   | E |   |   |   |   |   |   |   |"]
            + ["   |   |   | A | E |   |   |   |   |   |   |"]
            + ["   |" * 11] * 5
        )
    )
)


def test_parse_published_ascii_grid():
    grid = parse_ascii_grid(PUBLISHED_STYLE, [5, 3])
    assert grid.start == (5, 3)
    assert grid.rows[4] == ".O.E......."
    assert grid.rows[5] == "...AE......"
    assert grid.energy == [(4, 3), (5, 4)]
    assert grid.obstacles == [(4, 1)]
    with pytest.raises(GraspDataError, match="disagrees"):
        parse_ascii_grid(PUBLISHED_STYLE, [5, 4])
    with pytest.raises(GraspDataError):
        parse_ascii_grid(PUBLISHED_STYLE.replace(" E |", " X |"))


def test_ascii_round_trip():
    for seed in range(20):
        grid = generate_grid(seed)
        assert parse_ascii_grid(format_ascii_grid(grid)).rows == grid.rows


@needs_data
def test_published_grids_parse():
    env = GraspEnvironment(data_dir=GRASP_DIR)
    instances = env.published_instances()
    assert len(instances) == 2000
    assert instances[0].instance_id == "inner_random_free/0"
    assert len({i.instance_id for i in instances}) == 2000
    cluster = env.published_instances(["inner_cluster_block"])
    assert [i.instance_id for i in cluster[:2]] == [
        "inner_cluster_block/0",
        "inner_cluster_block/1",
    ]
    first = cluster[0].observation
    assert first["start"] == [5, 3]
    assert first["grid"][1] == "..OEEE....."
    assert first["grid"][5] == "...A....EOE"
    sample = env.instances(10, seed=1)
    assert [i.instance_id for i in sample] == [i.instance_id for i in env.instances(10, seed=1)]


@needs_data
@pytest.mark.parametrize("settings", GraspSettings.published(), ids=lambda s: s.key)
def test_published_greedy_replays(settings):
    from amortized.planners.environments.grasp import published_greedy_answers

    env = GraspEnvironment(settings, data_dir=GRASP_DIR)
    answers = published_greedy_answers(GRASP_DIR, settings)
    assert len(answers) == 2000
    results = [env.evaluate(i, answers[i.instance_id]) for i in env.published_instances()]
    assert all(r.invalid_output is None for r in results)
    mean = statistics.mean(r.score for r in results)
    if settings.cost_per_step == 0:
        assert mean > 1.0
    else:  # the baseline ignores the cost: 16-20 actions cost 4.8-6
        assert mean < 1.0


def test_instance_from_user_json():
    env = GraspEnvironment(GraspSettings(movement=8))
    rows = [EMPTY] * 4 + [".....E.....", ".....A....."] + [EMPTY] * 5
    inst = env.instance_from_spec({"grid": rows, "start": [5, 5]}, "mine")
    assert inst.instance_id == "mine"
    assert env.evaluate(inst, ["up", "take", "down", "drop"]).score == 1.0
    assert env.instance_from_spec({"grid": rows}).instance_id == "custom"
    for bad in (
        {"grid": rows[:10]},
        {"grid": [*rows[:5], ".....X.....", *rows[6:]]},
        {"grid": [EMPTY] * 11},
        {"grid": rows, "start": [0, 0]},
        {"grid": "rows"},
        {"grid": [*rows[:10], 5]},
        {"seed": 3},
    ):
        with pytest.raises(ValueError):  # noqa: PT011 (the messages differ)
            env.instance_from_spec(bad)
