"""Many-shot tabular prediction on the real SmolLM2-135M-Instruct, through the server's
``POST /v1/amortized/tabular/predict`` route.

What must hold for any model is asserted: a label from the training labels for every test
row, per-row provenance, probabilities that vote to the label, and usage that adds up. A
135M general chat model is not a tabular learner: over ten iris splits of this size it
averaged 0.33 accuracy, no better than the majority class, and on the split here it answers
by position in the answer array (the same labels for rows 0-7 of both chunks). So accuracy
is printed, not asserted.
"""

from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris

from amortized.serving.process import ServerProcess
from tests.conftest import SMOLLM2_MAX_MODEL_LEN, post_route
from tests.tabular.test_live import iris_rows

pytestmark = pytest.mark.server

TRAIN = 24
TEST = 16
SHOTS = 24
ROWS_PER_PROMPT = 8
SEEDS = [40, 41]
SPECIES = ["setosa", "versicolor", "virginica"]


def test_route_labels_every_row_from_the_training_labels(smollm2_server: ServerProcess) -> None:
    X, y = load_iris(return_X_y=True)
    order = np.random.RandomState(0).permutation(len(X))
    iris = (X[order], y[order])
    body: dict[str, Any] = {
        "train": iris_rows(iris, 0, TRAIN, True),
        "test": iris_rows(iris, TRAIN, TRAIN + TEST, False),
        "target": "species",
        # Guided JSON, the default: compact per request, whatever the server's settings.
        "options": {"shots": SHOTS, "rows_per_prompt": ROWS_PER_PROMPT, "seeds": SEEDS},
    }
    result = post_route(smollm2_server, "tabular/predict", body)

    assert result["object"] == "tabular.prediction"
    assert result["classes"] == SPECIES
    assert result["columns"] == ["f0", "f1", "f2", "f3"]
    assert result["shots"] == SHOTS  # 24 rows of 4 features fit 4,096 tokens: nothing cut
    assert result["rows_per_prompt"] == ROWS_PER_PROMPT
    assert result["warnings"] == []
    predictions = result["predictions"]
    assert [p["row"] for p in predictions] == list(range(TEST))
    for prediction in predictions:
        assert prediction["label"] in SPECIES
        # a guided answer always has the layout, so every row is read, never guessed
        assert prediction["provenance"] == "parsed", prediction
        probabilities = prediction["probabilities"]
        assert set(probabilities) == set(SPECIES)
        assert all(0.0 <= p <= 1.0 for p in probabilities.values())
        assert abs(sum(probabilities.values()) - 1.0) < 1e-6
        assert prediction["label"] == max(probabilities, key=probabilities.get)

    usage = result["usage"]
    chunks = -(-TEST // ROWS_PER_PROMPT)
    assert usage["prompts"] == chunks * len(SEEDS)
    # every prompt holds the 24 demonstrations (at least a few tokens a row) and fits the context
    assert 24 * 5 * usage["prompts"] < usage["prompt_tokens"]
    assert usage["prompt_tokens"] < SMOLLM2_MAX_MODEL_LEN * usage["prompts"]
    assert 0 <= usage["cached_tokens"] <= usage["prompt_tokens"]
    assert usage["prefill_tokens"] == usage["prompt_tokens"] - usage["cached_tokens"]
    # an answer element ({"id": i, "label": k}) is several tokens; at most the planned budget
    assert 3 * TEST * len(SEEDS) <= usage["completion_tokens"] <= 40 * TEST * len(SEEDS)

    truth = [SPECIES[int(v)] for v in iris[1][TRAIN : TRAIN + TEST]]
    labels = [p["label"] for p in predictions]
    accuracy = float(np.mean([a == b for a, b in zip(labels, truth, strict=True)]))
    train_labels = [SPECIES[int(v)] for v in iris[1][:TRAIN]]
    majority = max(SPECIES, key=train_labels.count)
    baseline = float(np.mean([t == majority for t in truth]))
    print(
        f"\nSmolLM2 on iris ({TRAIN} train, {TEST} test, {SHOTS} shots, seeds {SEEDS}): "
        f"accuracy {accuracy:.3f} (majority class {baseline:.3f}, chance 0.333)\n"
        f"predicted {labels}\ntruth     {truth}\nusage {usage}"
    )
