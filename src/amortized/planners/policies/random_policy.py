"""Random reference policy: uniformly random actions, seeded from the observation.

The same observation always gives the same actions, so scores are reproducible. Works for any
environment whose observation lists its actions (a list of names or a name → number map).
"""

import json
import random
import zlib
from typing import Any


def _rng(observation: dict[str, Any]) -> random.Random:
    text = json.dumps(observation, sort_keys=True)
    return random.Random(zlib.crc32(text.encode("utf-8")))


def solve(observation: dict[str, Any]) -> list[str]:
    names = list(observation["actions"])
    count = observation.get("max_actions") or observation.get("max_steps") or 20
    rng = _rng(observation)
    return [rng.choice(names) for _ in range(int(count))]


def act(observation: dict[str, Any]) -> str:
    names: list[str] = list(observation["actions"])
    return _rng(observation).choice(names)
