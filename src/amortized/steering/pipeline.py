"""The CASAL pipeline stages on a transformers model, shared by the CLI and the benchmark:
vectors from labels, CASAL from labels, the layer sweep."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from amortized.steering.casal import CasalConfig, CasalResult, casal_targets, train_casal
from amortized.steering.evaluation import SteeringMetrics, SteeringSpec, evaluate_model
from amortized.steering.judge import Judge
from amortized.steering.labelling import Label, LabelledItem
from amortized.steering.placement import load_model as load_model  # re-exported
from amortized.steering.splits import check_disjoint
from amortized.steering.vectors import SteeringVector, steering_vector


def split_labels(labelled: Sequence[LabelledItem]) -> tuple[list[str], list[str]]:
    """Known and unknown questions; dropped ones are left out."""
    known = [i.question for i in labelled if i.label is Label.KNOWN]
    unknown = [i.question for i in labelled if i.label is Label.UNKNOWN]
    if not known or not unknown:
        raise ValueError(
            f"need both known and unknown questions, got {len(known)} known and "
            f"{len(unknown)} unknown (label more questions or lower --threshold)"
        )
    return known, unknown


def vectors_from_labels(
    model: Any,
    tokenizer: Any,
    labelled: Sequence[LabelledItem],
    layers: Sequence[int],
    *,
    progress: bool = False,
) -> dict[int, SteeringVector]:
    """v_unknown = mean(unknown) - mean(known) at each layer's last question token."""
    from amortized.steering.capture import capture_last_token

    known, unknown = split_labels(labelled)
    acts = capture_last_token(model, tokenizer, known + unknown, layers, progress=progress)
    return {
        layer: steering_vector(acts[layer][: len(known)], acts[layer][len(known) :], layer)
        for layer in layers
    }


@dataclass(frozen=True)
class CasalRun:
    result: CasalResult
    capture_seconds: float
    """Forward passes to cache the layer's inputs and outputs (targets are cached once)."""


def casal_from_labels(
    model: Any,
    tokenizer: Any,
    labelled: Sequence[LabelledItem],
    vector: SteeringVector,
    config: CasalConfig,
    *,
    progress: bool = False,
) -> CasalRun:
    """Cache the layer's MLP inputs and outputs, build the targets and train the submodule."""
    from amortized.steering.capture import capture_mlp_inputs

    chosen = [i for i in labelled if i.label is not Label.DROPPED]
    started = time.perf_counter()
    resid, out = capture_mlp_inputs(
        model, tokenizer, [i.question for i in chosen], config.layer, progress=progress
    )
    capture_seconds = time.perf_counter() - started
    targets = casal_targets(
        resid, out, [i.label is Label.KNOWN for i in chosen], vector, config.alpha
    )
    result = train_casal(model, config.layer, resid, targets, config, progress=progress)
    return CasalRun(result, capture_seconds)


@dataclass(frozen=True)
class SweepRow:
    layer: int
    alpha: float
    metrics: SteeringMetrics


@dataclass(frozen=True)
class SweepResult:
    base: SteeringMetrics
    rows: list[SweepRow]
    best: SweepRow | None
    """Lowest hallucination among settings that keep known accuracy within
    ``max_known_drop`` of the base model (``None`` when no setting does)."""

    @property
    def fallback(self) -> SweepRow | None:
        """When no setting keeps known accuracy: the one with the highest known accuracy plus
        abstention rate on unknown questions, the two behaviours CASAL is meant to combine
        (lowest hallucination alone would ignore what steering costs on known questions)."""
        return max(
            self.rows,
            key=lambda r: (r.metrics.known_accuracy + r.metrics.unknown_abstention, -r.layer),
            default=None,
        )

    @property
    def choice(self) -> SweepRow | None:
        """:attr:`best`, or :attr:`fallback` when no setting keeps known accuracy."""
        return self.best or self.fallback


def layer_sweep(
    model: Any,
    tokenizer: Any,
    train: Sequence[LabelledItem],
    validation: Sequence[LabelledItem],
    layers: Sequence[int],
    alphas: Sequence[float],
    *,
    judge: Judge | None = None,
    max_known_drop: float = 0.05,
    base: SteeringMetrics | None = None,
    progress: bool = False,
) -> SweepResult:
    """Ordinary (inference-time) steering at each layer and strength, as the paper picks
    the CASAL layer: vectors from ``train``, scores on ``validation`` (never the test split;
    the two must share no question). ``base`` is the unsteered model on ``validation``."""
    check_disjoint(train, validation, "the training labels", "the validation labels")
    vectors = vectors_from_labels(model, tokenizer, train, layers)
    if base is None:
        base, _ = evaluate_model(model, tokenizer, validation, judge=judge)
    rows = []
    for layer in layers:
        for alpha in alphas:
            metrics, _ = evaluate_model(
                model,
                tokenizer,
                validation,
                judge=judge,
                steer=SteeringSpec(layer, vectors[layer].unknown, alpha),
                progress=progress,
            )
            rows.append(SweepRow(layer, alpha, metrics))
    keeping = [r for r in rows if r.metrics.known_accuracy >= base.known_accuracy - max_known_drop]
    best = min(keeping, key=lambda r: (r.metrics.hallucination, r.layer), default=None)
    return SweepResult(base, rows, best)
