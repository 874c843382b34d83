"""Many-shot tabular classification with an LLM (MachineLearningLM, arXiv 2509.06806).

Token-efficient row serialization, hundreds of demonstrations and batches of test rows
per prompt, multi-seed voting, guided JSON answers. Interfaces: a scikit-learn estimator,
``amortized tabular predict`` (resumable batch jobs), the server route and an agent tool.
"""

from typing import TYPE_CHECKING

from amortized._lazy import lazy_exports

if TYPE_CHECKING:
    from amortized.llm import (
        Completion,
        CompletionRequest,
        LLMBackend,
        OpenAICompatibleBackend,
    )
    from amortized.tabular.parsing import Provenance
    from amortized.tabular.predictor import (
        PredictionOptions,
        TabularInputError,
        TabularPrediction,
        TabularPredictor,
    )

_EXPORTS = {
    "Completion": "amortized.llm",
    "CompletionRequest": "amortized.llm",
    "LLMBackend": "amortized.llm",
    "OpenAICompatibleBackend": "amortized.llm",
    "Provenance": "amortized.tabular.parsing",
    "PredictionOptions": "amortized.tabular.predictor",
    "TabularInputError": "amortized.tabular.predictor",
    "TabularPrediction": "amortized.tabular.predictor",
    "TabularPredictor": "amortized.tabular.predictor",
}
"""Imported on first use, so the CLI can build its parser without these imports."""

__all__ = [
    "Completion",
    "CompletionRequest",
    "LLMBackend",
    "OpenAICompatibleBackend",
    "PredictionOptions",
    "Provenance",
    "TabularInputError",
    "TabularPrediction",
    "TabularPredictor",
]


__getattr__ = lazy_exports(__name__, _EXPORTS)
