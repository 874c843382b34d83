"""LangChain tool for code-policy grid planning through ``/v1/amortized/planners/solve``."""

from typing import Any, Literal

from pydantic import BaseModel, Field

from amortized.agents._http_tool import AmortizedRouteTool
from amortized.serving.routes.planners.protocol import GridInstance, SeedInstance, TaskSpec


class GridPlanningInput(BaseModel):
    task: TaskSpec
    instances: list[GridInstance | SeedInstance] | None = Field(
        default=None,
        description="GRASP grids ({'grid': [11 strings]}) or MiniGrid seeds ({'seed': 3}).",
    )
    count: int | None = Field(
        default=None, ge=1, le=20000, description="Instead of instances: generate this many."
    )
    strategy: Literal["direct", "pseudocode", "curriculum", "refine"] = "refine"
    rounds: int = Field(default=3, ge=1, le=20, description="LLM rounds when a program is new.")
    examples: int = Field(default=1, ge=0, le=5, description="Instances shown in the prompt.")


class GridPlanningTool(AmortizedRouteTool):
    """Solve many grid-world instances with one LLM-written policy program (IPP)."""

    name: str = "grid_plan"
    description: str = (
        "Solve grid-world planning instances (GRASP energy collection, MiniGrid door/key "
        "tasks) with one policy program that the served model writes and refines, or a "
        "validated program reused from the library. Returns actions and a score per "
        "instance, the program id and the LLM cost."
    )
    args_schema: type[BaseModel] = GridPlanningInput
    route: str = "planners/solve"

    def _body(self, arguments: dict[str, Any]) -> dict[str, Any]:
        task = arguments["task"]
        body: dict[str, Any] = {
            "task": task.model_dump() if isinstance(task, BaseModel) else task,
            "strategy": arguments.get("strategy", "refine"),
            "rounds": arguments.get("rounds", 3),
            "examples": arguments.get("examples", 1),
        }
        instances = arguments.get("instances")
        if instances is not None:
            body["instances"] = [
                i.model_dump(exclude_none=True) if isinstance(i, BaseModel) else i
                for i in instances
            ]
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
