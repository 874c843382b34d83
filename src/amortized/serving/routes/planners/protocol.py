"""Pydantic models of ``POST /v1/amortized/planners/solve`` (reused by the agent tool)."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TaskSpec(BaseModel):
    """Which environment, with which settings: together they form the program signature."""

    model_config = ConfigDict(extra="forbid")

    env: str = Field(
        description="'GRASP' or a MiniGrid id such as 'MiniGrid-DoorKey-8x8-v0'.",
        examples=["GRASP", "MiniGrid-DoorKey-8x8-v0"],
    )
    movement: Literal[4, 8] = Field(default=4, description="GRASP: move directions.")
    carry_limit: int = Field(
        default=100, ge=1, le=1000, description="GRASP: units carried at once (paper: 100, 2)."
    )
    cost_per_step: float = Field(
        default=0.0, ge=0, le=100, description="GRASP: cost of each action (paper: 0, 0.3)."
    )


class GridInstance(BaseModel):
    """A GRASP grid: 11 strings of '.', 'E' (energy), 'O' (obstacle) and one 'A' (start)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    grid: list[str] = Field(min_length=1, max_length=64)


class SeedInstance(BaseModel):
    """A MiniGrid instance: the environment's reset seed."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    seed: int = Field(ge=0)


class GenerateInstances(BaseModel):
    """Let the server draw ``count`` reproducible instances (GRASP generator, MiniGrid seeds)."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=20000)
    seed: int = 0


class LLMEndpoint(BaseModel):
    """Plan with another OpenAI-compatible endpoint instead of this server's model."""

    model_config = ConfigDict(extra="forbid")

    base_url: str
    model: str | None = None
    api_key: str | None = None


MAX_PRICE_PER_MILLION = 1e6
"""Dollars per million tokens: far above any model's price, and low enough that the cost stays
finite (an infinite one has no JSON number: it went out as null, against the schema)."""


class PlannerSolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: TaskSpec
    instances: list[GridInstance | SeedInstance] | None = Field(
        default=None, max_length=20000, description="Instances to solve; or use 'generate'."
    )
    generate: GenerateInstances | None = None
    strategy: Literal["direct", "pseudocode", "curriculum", "refine"] = "refine"
    mode: Literal["solve", "act"] = "solve"
    rounds: int = Field(default=3, ge=1, le=20)
    train_instances: int = Field(default=20, ge=1, le=1000)
    examples: int = Field(
        default=1, ge=0, le=5, description="Instances rendered into the opening prompt."
    )
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        description="LLM token budget over all rounds (prompts included); one that cannot pay "
        "for the opening prompt plus a program is refused with the minimum.",
    )
    wall_time_s: float | None = Field(default=None, gt=0, le=3600)
    reuse: bool = Field(default=True, description="Serve a validated library program if any.")
    min_success_rate: float = Field(default=0.5, ge=0, le=1)
    return_actions: bool = True
    llm: LLMEndpoint | None = None
    prompt_price_per_million: float = Field(default=0.0, ge=0, le=MAX_PRICE_PER_MILLION)
    completion_price_per_million: float = Field(default=0.0, ge=0, le=MAX_PRICE_PER_MILLION)


class InstanceResult(BaseModel):
    id: str
    status: Literal["ok", "wrong", "timeout", "error"]
    score: float
    success: bool
    actions: list[Any] | None = None
    error: str | None = None


class RoundSummary(BaseModel):
    index: int
    stage: str
    program_id: str | None
    mean_score: float | None
    success_rate: float | None
    error: str | None
    prompt_tokens: int
    completion_tokens: int


class CostSummary(BaseModel):
    llm_calls: int
    prompt_tokens: int
    completion_tokens: int
    dollars: float
    tokens_per_instance: float
    dollars_per_instance: float


class PlannerSolveResponse(BaseModel):
    object: Literal["planners.solution"] = "planners.solution"
    signature: str
    status: Literal["planned", "reused", "no_program"]
    program_id: str | None
    program: str | None = Field(description="The policy program's source.")
    mean_score: float | None
    success_rate: float | None
    counts: dict[str, int]
    results: list[InstanceResult]
    rounds: list[RoundSummary]
    stopped: str | None = Field(description="Why planning ended (absent when reused).")
    cost: CostSummary
    instances_per_s: float | None
    sandbox_mode: str | None = Field(
        default=None,
        description="How the program was contained: 'bubblewrap' or 'weak' (docs/sandbox.md).",
    )
