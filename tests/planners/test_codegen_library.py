"""Code extraction from LLM replies, the program library and cost accounting."""

import json
import threading

import pytest

from amortized.planners.codegen import NoProgramError, extract_program
from amortized.planners.cost import CostReport, Prices, Usage, amortization_ratio
from amortized.planners.direct import parse_actions
from amortized.planners.library import ProgramEntry, ProgramLibrary, program_id

PROGRAM = "def solve(observation):\n    return ['up', 'take']\n"


@pytest.mark.parametrize(
    "reply",
    [
        f"Here is my policy:\n```python\n{PROGRAM}```\nIt moves up and takes.",
        f"```\n{PROGRAM}```",
        f"{PROGRAM}\nThis program returns two actions.",
        f"Draft:\n```python\ndef helper():\n    pass\n```\nFinal:\n```python\n{PROGRAM}```",
        f"```Python\n{PROGRAM}",  # unterminated fence (reply cut off after the code)
    ],
)
def test_extracts_the_program_from_prose_and_fences(reply):
    source = extract_program(reply)
    namespace: dict[str, object] = {}
    exec(source, namespace)
    assert namespace["solve"]({}) == ["up", "take"]  # type: ignore[operator]


def test_truncated_code_keeps_the_complete_part():
    reply = f"```python\n{PROGRAM}\ndef unfinished(x:\n    return"
    assert extract_program(reply).strip() == PROGRAM.strip()


@pytest.mark.parametrize(
    "reply",
    ["", "I cannot help with that.", "```python\ndef act(o):\n    return 1\n```", "def solve(:"],
)
def test_no_program(reply):
    with pytest.raises(NoProgramError, match="solve"):
        extract_program(reply)


def test_act_entrypoint():
    assert "def act" in extract_program("```python\ndef act(o):\n    return 2\n```", "act")


def test_parse_actions():
    names = ("up", "down", "left", "right", "take", "drop", "upleft")
    assert parse_actions('Plan: ["up", "take", "down", "drop"]', names) == [
        "up",
        "take",
        "down",
        "drop",
    ]
    assert parse_actions("[0, 2, 2, 5]", names) == [0, 2, 2, 5]
    assert parse_actions("First UP, then take, then upleft.", names) == ["up", "take", "upleft"]
    assert parse_actions("nothing useful", names) is None


def entry(
    source: str, score: float, success: float, n: int = 20, sig: str = "GRASP/x"
) -> ProgramEntry:
    return ProgramEntry(
        signature=sig,
        source=source,
        entrypoint="solve",
        mean_score=score,
        success_rate=success,
        instances_evaluated=n,
    )


def test_library_keeps_the_best_per_signature(tmp_path):
    library = ProgramLibrary(tmp_path)
    assert library.best("GRASP/x") is None
    library.add(entry("a = 1\n" + PROGRAM, 1.0, 0.5))
    library.add(entry("b = 1\n" + PROGRAM, 3.0, 0.9))
    library.add(entry("c = 1\n" + PROGRAM, 9.0, 1.0, sig="GRASP/other"))
    best = library.best("GRASP/x")
    assert best is not None
    assert best.mean_score == 3.0
    assert best.program_id == program_id(best.source)
    assert library.best("GRASP/x", min_success_rate=0.95) is None
    assert library.best("GRASP/x", min_instances=50) is None
    # re-evaluating a program replaces its record instead of duplicating it
    library.add(entry("b = 1\n" + PROGRAM, 2.0, 0.9))
    assert [e.mean_score for e in library.entries("GRASP/x")] == [2.0, 1.0]
    assert library.get(best.program_id) is not None
    assert ProgramLibrary(tmp_path).best("GRASP/other") is not None  # persisted
    for path in tmp_path.glob("*.json"):
        json.loads(path.read_text())  # every file is complete JSON


def test_library_concurrent_writers_lose_nothing(tmp_path):
    def write(worker: int) -> None:
        library = ProgramLibrary(tmp_path)
        for i in range(10):
            library.add(entry(f"w{worker}_{i} = 1\n" + PROGRAM, float(i), 1.0))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ProgramLibrary(tmp_path).entries("GRASP/x")) == 40


def test_cost_report_and_amortization():
    usage = Usage()
    usage.add(1000, 500)
    usage.add(2000, 500)
    report = CostReport.of(usage, 16000, Prices(prompt_per_million=1.0, completion_per_million=4.0))
    assert report.usage.calls == 2
    assert report.tokens_per_instance == pytest.approx(4000 / 16000)
    assert report.dollars == pytest.approx((3000 * 1.0 + 1000 * 4.0) / 1e6)
    assert report.to_dict()["usage"]["total_tokens"] == 4000
    # direct: 1,500 tokens per instance; IPP: 4,000 tokens for all 16,000 instances
    assert amortization_ratio(1500, 4000, 16000) == pytest.approx(6000)
