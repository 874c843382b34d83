"""Prompts for the IPP strategies and the feedback that drives refinement.

Feedback is richer than the paper's three sample grids: aggregate score and success rate,
the worst instances rendered with the program's own actions and where they went wrong, and
the exception traces.
"""

from __future__ import annotations

from collections.abc import Mapping

from amortized.llm.base import Messages
from amortized.planners.environments.base import Environment, Instance
from amortized.planners.evaluation import EvaluationReport, OutcomeStatus, PolicyMode

SYSTEM_PROMPT = (
    "You are an expert Python programmer who writes planning policies for grid worlds. "
    "Reply with one complete Python program in a single ```python code block. Use only the "
    "standard library; no input/output, files or network."
)

DIRECT_SYSTEM_PROMPT = (
    "You are an expert planner for grid worlds. Answer with the list of actions only."
)

_PSEUDOCODE = {
    "GRASP": """\
plan = []; position = start; carrying = 0
while actions remain:
    target = nearest energy cell by breadth-first search around obstacles
    if there is none, or reaching it, taking, and walking back home no longer fits in the
       remaining actions, or (with a cost per step) the trip would cost more than it earns: break
    walk the shortest path to target; take; carrying += 1
    if carrying == carry_limit: walk home by BFS; drop; carrying = 0
walk home by BFS; drop  (only if carrying > 0)
return plan[:max_actions]""",
    "MiniGrid": """\
parse the grid into walls, doors (with their state), keys, boxes and the goal
BFS over (x, y, direction) states where moves are left / right / forward
if a key is needed: plan to the cell facing the key, pickup
plan to the cell facing the locked door, toggle (opens it while carrying its key)
if the mission is to pick up a box: drop the key in a free cell first, plan to face the box,
   pickup; otherwise plan to the goal cell
return the concatenated action list""",
}

_CURRICULUM = {
    "GRASP": [
        "First, ignore the carry limit, the cost per step and obstacles: collect as much "
        "energy as possible and bring it to the start cell within the action limit.",
        "Now respect obstacles: moves into obstacles do nothing, so route around them.",
        "Now respect the carry limit: take only while carrying fewer units than the limit; "
        "drop at the start cell before collecting more.",
        "Finally account for the cost per step: every action costs `cost_per_step`, so stop "
        "collecting when another unit would not pay for the steps it needs.",
    ],
    "MiniGrid": [
        "First, write a policy that turns and moves the agent to a chosen free cell using "
        "breadth-first search over positions and directions.",
        "Now pick up the key: go to the cell in front of it, face it, use pickup.",
        "Now open the locked door while carrying the key: face it and toggle.",
        "Finally complete the mission (reach the goal, or pick up the box behind the door).",
    ],
}


def family(env: Environment) -> str:
    return env.signature.split("/", 1)[0].split("-", 1)[0]


def pseudocode_for(env: Environment) -> str | None:
    return _PSEUDOCODE.get(family(env))


def curriculum_for(env: Environment) -> list[str]:
    return list(_CURRICULUM.get(family(env), []))


def _contract(mode: PolicyMode) -> str:
    if mode == "act":
        return (
            "Define `act(observation)` returning the single next action; it is called once "
            "per step with the current observation."
        )
    return (
        "Define `solve(observation)` returning the complete list of actions for the "
        "instance (open loop: it is called once, with the initial observation)."
    )


def task_prompt(
    env: Environment,
    examples: list[Instance],
    mode: PolicyMode,
    *,
    pseudocode: str | None = None,
) -> str:
    """The opening request: rules, contract, a few example instances, optional outline."""
    parts = [env.describe(), _contract(mode)]
    for number, instance in enumerate(examples, 1):
        parts.append(f"Example instance {number}:\n{env.render(instance)}")
    if pseudocode:
        parts.append(
            "Use or extend this outline of a greedy breadth-first-search planner:\n" + pseudocode
        )
    parts.append("Write the program.")
    return "\n\n".join(parts)


def feedback_prompt(
    env: Environment,
    report: EvaluationReport,
    instances: Mapping[str, Instance],
    *,
    worst: int = 3,
    max_chars: int = 6000,
) -> str:
    """What went wrong with the last program, for the next refinement round."""
    total = len(report.outcomes)
    counts = ", ".join(f"{n} {status}" for status, n in report.counts.items() if n)
    lines = [
        f"Your program was evaluated on {total} instances: mean score "
        f"{report.mean_score:.3f}, success rate {report.success_rate:.1%} ({counts}).",
    ]
    if report.load_error:
        lines.append(f"It could not be loaded:\n{report.load_error}")
    for outcome in report.worst(worst):
        if outcome.status is OutcomeStatus.OK:
            continue
        instance = instances[outcome.instance_id]
        header = (
            f"Instance {outcome.instance_id}: {outcome.status.value}, score {outcome.score:.2f}"
        )
        if outcome.status in (OutcomeStatus.ERROR, OutcomeStatus.TIMEOUT):
            lines.append(f"{header}\n{env.render(instance)}\n{outcome.error or ''}".rstrip())
            continue
        body = env.render(instance, outcome.actions or [])
        notes = "\n".join(f"- {event}" for event in outcome.events)
        reason = f"\nInvalid output: {outcome.error}" if outcome.error else ""
        lines.append(f"{header}\n{body}{reason}\n{notes}".rstrip())
    lines.append(
        "Fix these problems and improve the score. Reply with the complete corrected program."
    )
    text = "\n\n".join(lines)
    if len(text) > max_chars:
        text = text[: max_chars - 200] + "\n[... feedback truncated ...]\n\n" + lines[-1]
    return text


def messages(*turns: str) -> Messages:
    """System prompt plus alternating user/assistant turns, user first."""
    roles = ("user", "assistant")
    return [{"role": "system", "content": SYSTEM_PROMPT}] + [
        {"role": roles[i % 2], "content": text} for i, text in enumerate(turns)
    ]


def direct_messages(env: Environment, instance: Instance) -> Messages:
    """Direct elicitation: the rules and one instance, asking for its actions (no code)."""
    prompt = (
        f"{env.describe()}\n\nInstance:\n{env.render(instance)}\n\n"
        "Do not write code. Answer with the actions for this instance only, as a JSON array "
        "of action names."
    )
    return [
        {"role": "system", "content": DIRECT_SYSTEM_PROMPT},
        {"role": "user", "content": prompt},
    ]
