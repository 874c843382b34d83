"""Tabular route logic: JSON rows → :class:`TabularPredictor` on the server's engine."""

from amortized.llm.base import LLMBackend
from amortized.serving.routes.tabular.protocol import (
    JsonCell,
    RowPrediction,
    TabularPredictRequest,
    TabularPredictResponse,
    TabularUsage,
)
from amortized.tabular.predictor import PredictionOptions, TabularInputError, TabularPredictor


def feature_rows(
    request: TabularPredictRequest,
) -> tuple[list[str], list[list[JsonCell]], list[JsonCell], list[list[JsonCell]]]:
    """Columns, training rows, labels and test rows; ragged or incomplete rows are refused."""
    first = request.train[0]
    if request.target not in first:
        raise TabularInputError(
            f"target {request.target!r} is not a column of the training rows "
            f"(columns: {', '.join(first)})"
        )
    columns = [c for c in first if c != request.target]
    if not columns:
        raise TabularInputError("the training rows have no feature columns besides the target")
    expected = set(first)
    for index, row in enumerate(request.train):
        if set(row) != expected:
            raise TabularInputError(
                f"training row {index} has columns {sorted(row)}, expected {sorted(expected)}"
            )
    for index, row in enumerate(request.test):
        missing = [c for c in columns if c not in row]
        if missing:
            raise TabularInputError(f"test row {index} lacks {', '.join(missing)}")
    train = [[row[c] for c in columns] for row in request.train]
    labels = [row[request.target] for row in request.train]
    test = [[row[c] for c in columns] for row in request.test]
    return columns, train, labels, test


class TabularService:
    def __init__(self, backend: LLMBackend) -> None:
        self.backend = backend

    async def predict(self, request: TabularPredictRequest) -> TabularPredictResponse:
        columns, train, labels, test = feature_rows(request)
        options = request.options
        predictor = TabularPredictor(
            self.backend,
            PredictionOptions(
                shots=options.shots,
                rows_per_prompt=options.rows_per_prompt,
                seeds=tuple(options.seeds),
                shared_demonstrations=options.shared_demonstrations,
                guided=options.guided,
                chat_template=options.chat_template,
            ),
        )
        result = await predictor.predict(train, labels, test)
        names = [str(c) for c in result.classes]
        return TabularPredictResponse(
            classes=list(result.classes),
            predictions=[
                RowPrediction(
                    row=i,
                    label=label,
                    probabilities=dict(
                        zip(names, map(float, result.probabilities[i]), strict=True)
                    ),
                    provenance=result.provenance[i].value,
                )
                for i, label in enumerate(result.labels)
            ],
            columns=columns,
            shots=result.shots,
            rows_per_prompt=result.rows_per_prompt,
            usage=TabularUsage(
                prompts=result.usage.prompts,
                prompt_tokens=result.usage.prompt_tokens,
                cached_tokens=result.usage.cached_tokens,
                prefill_tokens=result.usage.prefill_tokens,
                completion_tokens=result.usage.completion_tokens,
            ),
            warnings=result.warnings,
        )
