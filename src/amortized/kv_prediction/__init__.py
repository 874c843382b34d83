"""KV-prediction prefill (arXiv 2410.08391): predict the base model's prompt KV cache.

An auxiliary model reads the prompt; per-layer linear maps turn its K/V into the base
model's; vLLM then computes only the last prompt token. Core logic (config, maps, training,
runtime) is free of vLLM; the KV connector in :mod:`amortized.serving.kv_prediction`
is the only module that imports it.
"""

from amortized.kv_prediction.config import (
    AttentionGeometry,
    PredictorConfig,
    PredictorError,
    PredictorFolder,
    check_fits_base,
    load_predictor_folder,
)
from amortized.kv_prediction.policy import (
    CONNECTOR_MODULE,
    CONNECTOR_NAME,
    KV_PREDICTION_PARAM,
    RequestPolicy,
)

__all__ = [
    "CONNECTOR_MODULE",
    "CONNECTOR_NAME",
    "KV_PREDICTION_PARAM",
    "AttentionGeometry",
    "PredictorConfig",
    "PredictorError",
    "PredictorFolder",
    "RequestPolicy",
    "check_fits_base",
    "load_predictor_folder",
]
