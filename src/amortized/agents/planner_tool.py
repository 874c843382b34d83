"""LangChain tool for code-policy grid planning through ``/v1/amortized/planners/solve``.

The arguments are flat and few (a model reads them in every prompt); the route itself takes
more (strategies, prices, other endpoints).
"""

from typing import Any, Literal

from pydantic import BaseModel, Field

from amortized.agents._http_tool import AmortizedRouteTool
from amortized.serving.routes.planners.protocol import PlannerSolveResponse


class GridPlanningInput(BaseModel):
    env: str = Field(description="GRASP or a MiniGrid id (MiniGrid-DoorKey-8x8-v0)")
    movement: Literal[4, 8] | None = Field(default=None, description="GRASP: 4 or 8")
    carry_limit: int | None = Field(default=None, ge=1, le=1000, description="GRASP: 100")
    cost_per_step: float | None = Field(default=None, ge=0, le=100, description="GRASP: 0")
    count: int | None = Field(default=None, ge=1, le=20000, description="instances to draw: 10")
    grids: list[list[str]] | None = Field(default=None, description="GRASP grids to solve")
    seeds: list[int] | None = Field(default=None, description="MiniGrid seeds to solve")
    max_tokens: int | None = Field(default=None, ge=1, description="LLM token budget")
    wall_time_s: float | None = Field(default=None, gt=0, le=3600, description="seconds")


class GridPlanningTool(AmortizedRouteTool):
    """Solve many grid-world instances with one LLM-written policy program (IPP)."""

    name: str = "grid_plan"
    description: str = (
        "Solve many grid-world instances (GRASP, MiniGrid) with one policy program written "
        "once and reused. Returns actions, scores and cost."
    )
    args_schema: type[BaseModel] = GridPlanningInput
    route: str = "planners/solve"
    output_model: type[BaseModel] | None = PlannerSolveResponse
    read_only: bool = False
    """A validated program goes into the server's library."""

    def _body(self, arguments: dict[str, Any]) -> dict[str, Any]:
        task = {"env": arguments["env"]}
        for name in ("movement", "carry_limit", "cost_per_step"):
            if arguments.get(name) is not None:
                task[name] = arguments[name]
        body: dict[str, Any] = {"task": task}
        for name in ("max_tokens", "wall_time_s"):
            if arguments.get(name) is not None:
                body[name] = arguments[name]
        if arguments.get("grids"):
            body["instances"] = [{"grid": grid} for grid in arguments["grids"]]
        elif arguments.get("seeds"):
            body["instances"] = [{"seed": seed} for seed in arguments["seeds"]]
        else:
            body["generate"] = {"count": arguments.get("count") or 10}
        return body

    def _summarize(self, result: dict[str, Any]) -> str:
        if result["status"] == "no_program":
            return (
                f"no working program for {result['signature']} "
                f"(stopped: {result.get('stopped')}; see the rounds in the artifact)"
            )
        return (
            f"{result['status']} program {result['program_id']} for {result['signature']}: "
            f"mean score {result['mean_score']:.3f}, success {result['success_rate']:.0%} over "
            f"{len(result['results'])} instances, {result['cost']['llm_calls']} LLM calls"
        )
