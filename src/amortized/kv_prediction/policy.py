"""Who gets predicted KV, and how predicted blocks are kept out of everyone else's prefix cache.

Predicted K/V enter vLLM's prefix cache like exact ones. To keep a request that did not ask
for prediction from ever reusing them, every predicted request carries a cache salt ending
in ``amortized-kvp:<predictor fingerprint>``; vLLM folds the salt into block hashes, so
predicted blocks live in their own namespace. The connector predicts only for requests that
carry that salt, so an unsalted request (e.g. one that bypassed the API layer) is simply
served exactly. Requests with the same salt share blocks; a block can then hold K/V the base
computed on predicted context, so a predicted request's output can depend on which predicted
requests ran before it (docs/kv_prediction.md, "Prefix-cache policy").

With a prefix-cache hit the base only computes the uncached suffix, but the auxiliary model
still reads the whole prompt; :func:`worth_predicting` skips prediction when that costs more
than computing the suffix exactly.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KV_PREDICTION_PARAM = "kv_prediction"
"""Key in the request's ``kv_transfer_params``: ``true`` opts in, ``false`` opts out."""
SALT_PREFIX = "amortized-kvp:"
CONNECTOR_NAME = "KVPredictionConnector"
CONNECTOR_MODULE = "amortized.serving.kv_prediction.connector"


class PolicyError(ValueError):
    """A request's KV-prediction options are malformed."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def namespace_tag(fingerprint: str) -> str:
    """The cache-salt suffix marking blocks made with this predictor."""
    return f"{SALT_PREFIX}{fingerprint}"


@dataclass(frozen=True)
class RequestPolicy:
    """Server-wide decision inputs: the predictor's tag and whether prediction is on by default."""

    tag: str
    default_on: bool = True

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        """Resolve opt-in/out for one OpenAI request body and salt it when predicting.

        Raises :class:`PolicyError` for a malformed option; the body is changed in place.
        """
        params = body.get("kv_transfer_params")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise PolicyError("kv_transfer_params must be a JSON object", "kv_transfer_params")
        flag = params.get(KV_PREDICTION_PARAM, self.default_on)
        if not isinstance(flag, bool):
            raise PolicyError(
                f"kv_transfer_params.{KV_PREDICTION_PARAM} must be true or false, not {flag!r}",
                f"kv_transfer_params.{KV_PREDICTION_PARAM}",
            )
        salt = body.get("cache_salt")
        if salt is not None and not isinstance(salt, str):
            raise PolicyError("cache_salt must be a string", "cache_salt")
        if salt is not None and salt.endswith(self.tag):
            raise PolicyError(
                f"cache_salt must not end with the reserved {SALT_PREFIX} tag", "cache_salt"
            )
        params = {**params, KV_PREDICTION_PARAM: flag}
        body["kv_transfer_params"] = params
        if flag:
            body["cache_salt"] = f"{salt}|{self.tag}" if salt else self.tag
        return body


def wants_prediction(
    kv_transfer_params: Mapping[str, Any] | None, cache_salt: str | None, tag: str
) -> bool:
    """Engine-side check: opted in *and* salted into the predicted namespace."""
    if not kv_transfer_params or kv_transfer_params.get(KV_PREDICTION_PARAM) is not True:
        return False
    return cache_salt is not None and cache_salt.endswith(tag)


def aux_cost_fraction(
    aux_layers_run: int, aux_hidden_size: int, base_layers: int, base_hidden_size: int
) -> float:
    """Auxiliary forward cost per token relative to the base's (layers x hidden^2, the
    weight-bound part of a transformer layer; embeddings and attention length ignored)."""
    return (aux_layers_run * aux_hidden_size**2) / (base_layers * base_hidden_size**2)


def worth_predicting(end: int, cached: int, fraction: float) -> bool:
    """After a prefix-cache hit of ``cached`` tokens, predict positions ``cached..end-1``
    only if that is cheaper than computing them: the auxiliary model reads all ``end`` tokens
    (it keeps no cache of its own), the base would compute the ``end - cached`` uncached
    ones. Without a hit the operator's choice stands (the exactness check predicts with an
    auxiliary model as large as the base)."""
    uncached = end - cached
    return uncached > 0 and (cached == 0 or fraction * end < uncached)


def connector_extra_config(config: Any) -> dict[str, Any] | None:
    """``kv_connector_extra_config`` when ``config`` (a KVTransferConfig or dict) selects ours."""
    if config is None:
        return None
    data = config if isinstance(config, Mapping) else vars(config)
    if data.get("kv_connector") != CONNECTOR_NAME:
        return None
    extra = data.get("kv_connector_extra_config") or {}
    return dict(extra)
