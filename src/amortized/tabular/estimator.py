"""A scikit-learn classifier that predicts by many-shot prompting (no training happens).

``fit`` only stores the demonstrations; ``predict_proba`` builds prompts and asks the model.
Backed by any OpenAI-compatible endpoint (``base_url``) or an in-process vLLM ``LLM``
(``backend=OfflineLLMBackend(LLM(...))``).
"""

import asyncio
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from amortized.llm import LLMBackend, OpenAICompatibleBackend
from amortized.tabular.predictor import PredictionOptions, TabularPrediction, TabularPredictor


class LLMTabularClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Many-shot in-context classification (MachineLearningLM) as an estimator."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        model: str | None = None,
        *,
        shots: int = 256,
        rows_per_prompt: int = 50,
        seeds: tuple[int, ...] = (40, 41),
        shared_demonstrations: bool = False,
        guided: str = "json",
        chat_template: bool = False,
        max_concurrency: int = 8,
        backend: LLMBackend | None = None,
    ) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.model = model
        self.shots = shots
        self.rows_per_prompt = rows_per_prompt
        self.seeds = seeds
        self.shared_demonstrations = shared_demonstrations
        self.guided = guided
        self.chat_template = chat_template
        self.max_concurrency = max_concurrency
        self.backend = backend

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        tags.classifier_tags.poor_score = True  # a tiny local model is near chance
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        return tags

    def fit(self, X: Any, y: Any) -> "LLMTabularClassifier":
        X, y = validate_data(self, X, y, dtype=None, ensure_all_finite=False)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(
                f"the target has only one class ({self.classes_[0]!r}); "
                "classification needs at least two"
            )
        self.X_train_ = X
        self.y_train_ = y
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.predict_detailed(X).probabilities

    def predict(self, X: Any) -> np.ndarray:
        probabilities = self.predict_proba(X)
        return np.asarray(self.classes_[probabilities.argmax(axis=1)])

    def predict_detailed(self, X: Any) -> TabularPrediction:
        """Predictions with per-row provenance, usage and warnings."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=None, ensure_all_finite=False, reset=False)
        result: TabularPrediction = _run(self._predict(X))
        return result

    async def _predict(self, X: np.ndarray) -> TabularPrediction:
        backend = self.backend or OpenAICompatibleBackend(self.base_url, self.api_key, self.model)
        options = PredictionOptions(
            shots=self.shots,
            rows_per_prompt=self.rows_per_prompt,
            seeds=tuple(self.seeds),
            shared_demonstrations=self.shared_demonstrations,
            guided=self.guided,  # type: ignore[arg-type]
            chat_template=self.chat_template,
            max_concurrency=self.max_concurrency,
        )
        try:
            predictor = TabularPredictor(backend, options)
            result = await predictor.predict(
                _cells(self.X_train_), list(self.y_train_.tolist()), _cells(X)
            )
        finally:
            if self.backend is None:
                await backend.close()
        # The predictor codes labels in sorted order, the same order as np.unique.
        return result


def _cells(X: np.ndarray) -> list[list[Any]]:
    return [[_cell(v) for v in row] for row in X.tolist()]


def _cell(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _run(coroutine: Any) -> Any:
    """Run a coroutine from sync code, also when called inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
