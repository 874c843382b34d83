"""Baked-in activation steering (CASAL, arXiv 2510.02324): label questions known/unknown by
sampling, find the direction that separates them, and train one layer's MLP so the model's
own weights abstain on what it does not know. No HTTP here; names load lazily (torch).
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amortized.steering.casal import CasalConfig, CasalResult, apply_casal, train_casal
    from amortized.steering.evaluation import SteeringMetrics, evaluate_model, score_answers
    from amortized.steering.export import casal_provenance, export_checkpoint
    from amortized.steering.judge import Judge, SubstringJudge
    from amortized.steering.labelling import LabelledItem, LabellingOptions, label_questions
    from amortized.steering.qa import QAItem, read_qa
    from amortized.steering.steer import steering
    from amortized.steering.vectors import SteeringVector, steering_vector

_EXPORTS = {
    "CasalConfig": "amortized.steering.casal",
    "CasalResult": "amortized.steering.casal",
    "apply_casal": "amortized.steering.casal",
    "train_casal": "amortized.steering.casal",
    "SteeringMetrics": "amortized.steering.evaluation",
    "evaluate_model": "amortized.steering.evaluation",
    "score_answers": "amortized.steering.evaluation",
    "casal_provenance": "amortized.steering.export",
    "export_checkpoint": "amortized.steering.export",
    "Judge": "amortized.steering.judge",
    "SubstringJudge": "amortized.steering.judge",
    "LabelledItem": "amortized.steering.labelling",
    "LabellingOptions": "amortized.steering.labelling",
    "label_questions": "amortized.steering.labelling",
    "QAItem": "amortized.steering.qa",
    "read_qa": "amortized.steering.qa",
    "steering": "amortized.steering.steer",
    "SteeringVector": "amortized.steering.vectors",
    "steering_vector": "amortized.steering.vectors",
}

__all__ = [
    "CasalConfig",
    "CasalResult",
    "Judge",
    "LabelledItem",
    "LabellingOptions",
    "QAItem",
    "SteeringMetrics",
    "SteeringVector",
    "SubstringJudge",
    "apply_casal",
    "casal_provenance",
    "evaluate_model",
    "export_checkpoint",
    "label_questions",
    "read_qa",
    "score_answers",
    "steering",
    "steering_vector",
    "train_casal",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
