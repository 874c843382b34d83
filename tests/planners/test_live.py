"""The planners through the real server: ``POST /v1/amortized/planners/solve``, the
``amortized plan`` command and the LangChain tool, with the tiny model and the scripted
stand-in (passed to the server as an external endpoint)."""

import json
import subprocess
import sys

import httpx
import pytest
from langchain_core.messages import ToolMessage

from amortized.agents import GridPlanningTool
from amortized.planners.environments import make_environment
from amortized.planners.policies import load_reference_policy, reference_policy_source
from tests.conftest import API_KEY, SCRIPTED_LLM_PORT
from tests.planners.scripted_llm import serve_scripted

pytestmark = pytest.mark.server

GRID = [
    "...........",
    "..E........",
    "...........",
    "....OOO....",
    "...........",
    ".....A..E..",
    "...........",
    "...E.......",
    "...........",
    "........E..",
    "...........",
]
GREEDY_REPLY = f"```python\n{reference_policy_source('grasp_greedy')}```"


def post(server, body, *, key=API_KEY):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        f"{server.root_url}/v1/amortized/planners/solve", json=body, headers=headers, timeout=300
    )


def test_tiny_model_plans_end_to_end(live_server):
    body = {
        "task": {"env": "GRASP", "movement": 8, "carry_limit": 2, "cost_per_step": 0.3},
        "generate": {"count": 4, "seed": 1},
        "strategy": "direct",
        "examples": 0,  # the tiny model's 2,048-token context holds only the rules
        "reuse": False,
    }
    reply = post(live_server, body)
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["signature"] == "GRASP/move8-carry2-cost0.3"
    assert result["cost"]["llm_calls"] == 1
    assert result["cost"]["prompt_tokens"] > 100
    assert len(result["rounds"]) == 1
    # the tiny model writes garbage: either no program (with the reason) or a scored one
    if result["status"] == "no_program":
        assert result["rounds"][0]["error"]
        assert result["results"] == []
    else:
        assert len(result["results"]) == 4
        assert result["sandbox_mode"] in ("bubblewrap", "weak")


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"task": {"env": "Sokoban"}, "generate": {"count": 2}}, 400, "unknown environment"),
        (
            {"task": {"env": "GRASP"}, "generate": {"count": 2}, "instances": [{"grid": GRID}]},
            400,
            "either 'instances' or 'generate'",
        ),
        ({"task": {"env": "GRASP"}, "instances": [{"grid": ["..A", "EE"]}]}, 400, "instance 0"),
        ({"task": {"env": "MiniGrid-DoorKey-8x8-v0"}, "instances": [{"grid": GRID}]}, 400, "seed"),
        ({"task": {"env": "GRASP"}, "generate": {"count": 2}, "rounds": 0}, 400, "rounds"),
        ({"task": {"env": "GRASP", "movement": 6}, "generate": {"count": 2}}, 400, "movement"),
    ],
)
def test_bad_requests_get_clear_errors(live_server, body, status, fragment):
    reply = post(live_server, body)
    assert reply.status_code == status, reply.text
    assert fragment in reply.text
    assert reply.headers["content-type"].startswith("application/json")


def test_requires_the_api_key_and_keeps_serving(live_server):
    assert post(live_server, {"task": {"env": "GRASP"}}, key=None).status_code == 401
    models = httpx.get(
        f"{live_server.base_url}/models", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert models.status_code == 200


def test_external_llm_plans_then_the_library_serves_without_llm(live_server):
    task = {"env": "GRASP", "movement": 4, "carry_limit": 100, "cost_per_step": 0.0}
    with serve_scripted([GREEDY_REPLY], port=SCRIPTED_LLM_PORT) as (llm, base_url):
        body = {
            "task": task,
            "generate": {"count": 12, "seed": 4},
            "train_instances": 10,
            "strategy": "pseudocode",
            "llm": {"base_url": base_url, "model": "scripted"},
        }
        first = post(live_server, body)
        assert first.status_code == 200, first.text
        planned = first.json()
        assert planned["status"] == "planned"
        assert len(llm.requests) == 1
        assert planned["success_rate"] == 1.0
        assert len(planned["results"]) == 12
        assert all(r["actions"] for r in planned["results"])
        # a user-supplied grid, same signature: the stored program answers, no LLM call
        second = post(live_server, {"task": task, "instances": [{"id": "mine", "grid": GRID}]})
        assert second.status_code == 200, second.text
        reused = second.json()
        assert len(llm.requests) == 1
    assert reused["status"] == "reused"
    assert reused["program_id"] == planned["program_id"]
    assert reused["cost"]["llm_calls"] == 0
    assert reused["results"][0]["id"] == "mine"
    env = make_environment("GRASP", **{k: v for k, v in task.items() if k != "env"})
    instance = env.instance_from_spec({"grid": GRID})
    expected = env.evaluate(instance, load_reference_policy("grasp_greedy")(instance.observation))
    assert reused["results"][0]["score"] == expected.score
    assert expected.score >= 2.0  # two of the four units fit in 20 actions


async def test_langchain_tool(live_server):
    tool = GridPlanningTool(base_url=live_server.base_url, api_key=API_KEY)
    call = {
        "name": tool.name,
        "args": {"env": "MiniGrid-Unlock-v0", "count": 2, "max_tokens": 60000},
        "id": "call-1",
        "type": "tool_call",
    }
    message = await tool.ainvoke(call)
    assert isinstance(message, ToolMessage)
    assert message.artifact["signature"] == "MiniGrid-Unlock-v0"
    assert message.artifact["rounds"]
    assert "MiniGrid-Unlock-v0" in message.content
    bad = await tool.ainvoke({**call, "args": {"env": "Nope", "count": 1}})
    assert "400" in bad.content
    assert "unknown environment" in bad.content


def run_plan(*argv):
    command = [sys.executable, "-m", "amortized", "plan", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_cli_plans_with_the_stand_in_and_writes_results(tmp_path):
    out = tmp_path / "results.jsonl"
    with serve_scripted([GREEDY_REPLY]) as (_llm, base_url):
        done = run_plan(
            "--env", "GRASP", "--carry-limit", "2", "--instances", "15", "--train", "5",
            "--strategy", "refine", "--rounds", "1", "--base-url", base_url,
            "--library", str(tmp_path / "library"), "--out", str(out),
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["status"] == "planned"
    assert summary["signature"] == "GRASP/move4-carry2-cost0"
    assert summary["cost"]["usage"]["calls"] == 1
    assert "round 1 [initial]" in done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 15
    assert len({r["id"] for r in rows}) == 15


def test_cli_with_the_tiny_model(live_server, tmp_path):
    done = run_plan(
        "--env", "MiniGrid-DoorKey-8x8-v0", "--instances", "3", "--strategy", "direct",
        "--examples", "0",
        "--base-url", live_server.base_url, "--api-key", API_KEY, "--model", "tiny",
        "--library", str(tmp_path),
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["cost"]["usage"]["calls"] == 1
    assert summary["status"] in ("planned", "no_program")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--env", "Sokoban"], "unknown environment"),
        (["--env", "GRASP", "--movement", "5"], "--movement"),
        (["--env", "GRASP", "--instances", "0"], "at least 1"),
        (["--env", "GRASP", "--grasp-dir", "/nonexistent"], "/nonexistent"),
        (["--env", "GRASP", "--base-url", "http://127.0.0.1:9/v1"], "cannot reach"),
    ],
)
def test_cli_bad_input_is_one_line(argv, fragment, tmp_path):
    done = run_plan(*argv, "--library", str(tmp_path))
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert fragment in done.stderr
