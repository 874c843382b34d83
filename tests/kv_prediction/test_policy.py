"""Request policy: opt-in/out, the cache-salt namespace, connector settings."""

import pytest
import torch

from amortized.kv_prediction import PredictorError, RequestPolicy
from amortized.kv_prediction.policy import (
    PolicyError,
    connector_extra_config,
    namespace_tag,
    wants_prediction,
)
from amortized.serving.routes.kv_prediction.serving import parse_default

TAG = namespace_tag("abc123")


def test_default_on_salts_the_request():
    body = RequestPolicy(TAG).apply({"model": "m", "prompt": "hi"})
    assert body["kv_transfer_params"] == {"kv_prediction": True}
    assert body["cache_salt"] == TAG
    assert wants_prediction(body["kv_transfer_params"], body["cache_salt"], TAG)


def test_opt_out_leaves_the_salt_alone():
    body = RequestPolicy(TAG).apply({"kv_transfer_params": {"kv_prediction": False}})
    assert body["kv_transfer_params"] == {"kv_prediction": False}
    assert "cache_salt" not in body
    assert not wants_prediction(body["kv_transfer_params"], body.get("cache_salt"), TAG)


def test_default_off_needs_an_explicit_opt_in():
    policy = RequestPolicy(TAG, default_on=False)
    assert policy.apply({})["kv_transfer_params"] == {"kv_prediction": False}
    opted = policy.apply({"kv_transfer_params": {"kv_prediction": True, "other": 1}})
    assert opted["kv_transfer_params"] == {"kv_prediction": True, "other": 1}
    assert opted["cache_salt"] == TAG


def test_a_user_salt_is_kept_so_tenants_stay_apart():
    body = RequestPolicy(TAG).apply({"cache_salt": "tenant-a"})
    assert body["cache_salt"] == f"tenant-a|{TAG}"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"kv_transfer_params": {"kv_prediction": "yes"}}, "kv_transfer_params.kv_prediction"),
        ({"kv_transfer_params": [1]}, "kv_transfer_params"),
        ({"cache_salt": 5}, "cache_salt"),
        ({"cache_salt": f"x|{TAG}"}, "cache_salt"),
    ],
)
def test_malformed_options_name_the_parameter(body, param):
    with pytest.raises(PolicyError) as caught:
        RequestPolicy(TAG).apply(body)
    assert caught.value.param == param


def test_engine_side_check_needs_both_flag_and_salt():
    assert not wants_prediction({"kv_prediction": True}, None, TAG)
    assert not wants_prediction({"kv_prediction": True}, "other", TAG)
    assert not wants_prediction(None, TAG, TAG)
    assert wants_prediction({"kv_prediction": True}, f"u|{TAG}", TAG)


def test_connector_extra_config_only_for_our_connector():
    assert connector_extra_config(None) is None
    assert connector_extra_config({"kv_connector": "NixlConnector"}) is None
    ours = {"kv_connector": "KVPredictionConnector", "kv_connector_extra_config": {"a": 1}}
    assert connector_extra_config(ours) == {"a": 1}


def test_parse_default():
    assert parse_default(None) is True
    assert parse_default("off") is False
    with pytest.raises(ValueError, match='"on" or "off"'):
        parse_default("maybe")


def test_connector_settings_and_slots():
    from amortized.serving.kv_prediction.connector import ConnectorSettings, slot_mapping

    with pytest.raises(PredictorError, match='needs "predictor"'):
        ConnectorSettings.parse({})
    with pytest.raises(PredictorError, match="unknown keys"):
        ConnectorSettings.parse({"predictor": "p", "typo": 1})
    settings = ConnectorSettings.parse({"predictor": "p", "min_prompt_tokens": 64})
    assert settings.min_prompt_tokens == 64
    slots = slot_mapping([7, 3], start=126, end=130, block_size=128)
    assert slots.tolist() == [7 * 128 + 126, 7 * 128 + 127, 3 * 128, 3 * 128 + 1]
    assert slots.dtype == torch.long


def test_span_covers_all_but_the_last_token_unless_block_aligned_is_asked_for():
    """Both modes on purpose, on any CPU: alignment is a setting, never the processor's."""
    from amortized.serving.kv_prediction.connector import ConnectorSettings, predicted_span_end

    assert predicted_span_end(70, 32, None) == 69
    assert predicted_span_end(31, 32, None) == 0
    assert predicted_span_end(70, 32, 32) == 64
    assert predicted_span_end(70, 32, 128) == 0
    assert predicted_span_end(257, 32, 128) == 256
    assert ConnectorSettings.parse({"predictor": "p"}).block_aligned is False
    assert ConnectorSettings.parse({"predictor": "p", "block_aligned": True}).block_aligned
    with pytest.raises(PredictorError, match="block_aligned must be true or false"):
        ConnectorSettings.parse({"predictor": "p", "block_aligned": "yes"})


def test_prediction_after_a_prefix_hit_must_pay_for_itself():
    from amortized.kv_prediction.policy import aux_cost_fraction, worth_predicting

    quarter = aux_cost_fraction(8, 4096, 32, 4096)
    assert quarter == 0.25
    assert aux_cost_fraction(1, 64, 2, 128) == 1 / 8
    # No hit: always, even with an auxiliary model as costly as the base (identity check).
    assert worth_predicting(1000, 0, 1.0)
    assert not worth_predicting(0, 0, 0.25)
    # A hit: the auxiliary model reads all 1000 tokens (cost 250) vs the base's suffix.
    assert worth_predicting(1000, 700, quarter)  # 300 uncached > 250
    assert not worth_predicting(1000, 800, quarter)  # 200 uncached < 250
    assert not worth_predicting(1000, 1000, quarter)
