"""Many-shot tabular classification with an LLM (MachineLearningLM, arXiv 2509.06806).

Token-efficient row serialization, hundreds of demonstrations and batches of test rows
per prompt, multi-seed voting, guided JSON answers. Interfaces: a scikit-learn estimator,
``amortized tabular predict`` (resumable batch jobs), the server route and an agent tool.
"""

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
