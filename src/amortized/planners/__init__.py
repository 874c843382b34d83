"""Code-policy grid planners (IPP, arXiv 2505.10749): an LLM writes one policy program, the
sandbox runs it over many instances, feedback refines it, and the library reuses it.

No HTTP here. Names load lazily, so the sandbox worker (which imports this package on start)
stays light.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amortized.planners.environments import Environment, Instance, make_environment
    from amortized.planners.evaluation import EvaluationReport, evaluate_program
    from amortized.planners.ipp import PlannerBudget, PlannerOptions, ProgramPlanner, Strategy
    from amortized.planners.library import ProgramLibrary
    from amortized.planners.sandbox import Sandbox, SandboxLimits
    from amortized.planners.solver import SolveOptions, SolveReport, solve_task

_EXPORTS = {
    "Environment": "amortized.planners.environments",
    "Instance": "amortized.planners.environments",
    "make_environment": "amortized.planners.environments",
    "EvaluationReport": "amortized.planners.evaluation",
    "evaluate_program": "amortized.planners.evaluation",
    "PlannerBudget": "amortized.planners.ipp",
    "PlannerOptions": "amortized.planners.ipp",
    "ProgramPlanner": "amortized.planners.ipp",
    "Strategy": "amortized.planners.ipp",
    "ProgramLibrary": "amortized.planners.library",
    "Sandbox": "amortized.planners.sandbox",
    "SandboxLimits": "amortized.planners.sandbox",
    "SolveOptions": "amortized.planners.solver",
    "SolveReport": "amortized.planners.solver",
    "solve_task": "amortized.planners.solver",
}

__all__ = [
    "Environment",
    "EvaluationReport",
    "Instance",
    "PlannerBudget",
    "PlannerOptions",
    "ProgramLibrary",
    "ProgramPlanner",
    "Sandbox",
    "SandboxLimits",
    "SolveOptions",
    "SolveReport",
    "Strategy",
    "evaluate_program",
    "make_environment",
    "solve_task",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
