"""Direct solution elicitation: one LLM call per instance, the baseline IPP amortizes away."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from amortized.llm.base import CompletionRequest, LLMBackend
from amortized.planners.cost import Usage
from amortized.planners.environments.base import Environment, Instance
from amortized.planners.evaluation import InstanceOutcome, OutcomeStatus
from amortized.planners.prompts import direct_messages

_LIST = re.compile(r"\[[^\[\]]*\]", re.DOTALL)


def parse_actions(reply: str, action_names: Sequence[str]) -> list[str | int] | None:
    """The last JSON list in ``reply``; else action names in the order they appear."""
    for match in reversed(_LIST.findall(reply)):
        try:
            value = json.loads(match)
        except json.JSONDecodeError:
            continue
        if isinstance(value, list) and all(isinstance(v, str | int) for v in value):
            return list(value)
    names = sorted(action_names, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b", re.IGNORECASE)
    found: list[str | int] = [m.lower() for m in pattern.findall(reply)]
    return found or None


@dataclass(frozen=True)
class DirectResult:
    outcomes: list[InstanceOutcome]
    usage: Usage

    @property
    def mean_score(self) -> float:
        return sum(o.score for o in self.outcomes) / len(self.outcomes) if self.outcomes else 0.0

    @property
    def success_rate(self) -> float:
        if not self.outcomes:
            return 0.0
        return sum(o.success for o in self.outcomes) / len(self.outcomes)


async def solve_directly(
    backend: LLMBackend,
    env: Environment,
    instances: Sequence[Instance],
    *,
    max_tokens: int = 256,
    concurrency: int = 8,
) -> DirectResult:
    """Ask for each instance's action list separately and score the answers."""
    usage = Usage()
    gate = asyncio.Semaphore(concurrency)

    async def one(instance: Instance) -> InstanceOutcome:
        conversation = direct_messages(env, instance)
        async with gate:
            try:
                room = await backend.max_model_len() - await backend.count_tokens(conversation)
                completion = await backend.complete(
                    CompletionRequest(
                        prompt=conversation,
                        max_tokens=max(1, min(max_tokens, room)),
                        temperature=0.0,
                        top_p=1.0,
                        top_k=None,
                        logprobs=0,
                    )
                )
            except Exception as error:  # one failed call costs one instance, not the run
                return InstanceOutcome(
                    instance.instance_id, OutcomeStatus.ERROR, 0.0, False, error=str(error)
                )
        usage.add(completion.prompt_tokens, completion.completion_tokens)
        actions = parse_actions(completion.text, env.action_names)
        if actions is None:
            return InstanceOutcome(
                instance.instance_id,
                OutcomeStatus.WRONG,
                0.0,
                False,
                error="no action list in the reply",
            )
        episode = env.evaluate(instance, actions)
        status = OutcomeStatus.OK if episode.success else OutcomeStatus.WRONG
        return InstanceOutcome(
            instance.instance_id,
            status,
            episode.score,
            episode.success,
            actions=actions,
            events=episode.events,
            error=episode.invalid_output,
        )

    outcomes = list(await asyncio.gather(*(one(i) for i in instances)))
    return DirectResult(outcomes=outcomes, usage=usage)
