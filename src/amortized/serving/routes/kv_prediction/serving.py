"""Server-side KV-prediction settings, read once from vLLM's ``--kv-transfer-config``."""

from argparse import Namespace
from dataclasses import dataclass
from typing import Any

from amortized.kv_prediction.config import PredictorFolder, load_predictor_folder
from amortized.kv_prediction.policy import (
    KV_PREDICTION_PARAM,
    RequestPolicy,
    connector_extra_config,
    namespace_tag,
)
from amortized.serving.routes.kv_prediction.protocol import KVPredictionInfo

OPT_OUT_EXAMPLE = f'extra_body={{"kv_transfer_params": {{"{KV_PREDICTION_PARAM}": false}}}}'
ENABLE_HINT = "start the server with `amortized serve MODEL --kv-predictor DIR`"


def parse_default(value: Any) -> bool:
    """``on``/``off`` (or a bool) from ``kv_connector_extra_config.default``."""
    if value is None or value is True or value == "on":
        return True
    if value is False or value == "off":
        return False
    raise ValueError(f'kv_connector_extra_config.default must be "on" or "off", not {value!r}')


@dataclass(frozen=True)
class KVPredictionService:
    """The policy the request middleware applies and what the info route reports."""

    folder: PredictorFolder | None
    policy: RequestPolicy | None
    min_prompt_tokens: int | None = None

    @classmethod
    def from_args(cls, args: Namespace) -> "KVPredictionService":
        """Enabled iff ``args.kv_transfer_config`` selects the KV-prediction connector."""
        extra = connector_extra_config(getattr(args, "kv_transfer_config", None))
        if extra is None:
            return cls(None, None)
        folder = load_predictor_folder(str(extra.get("predictor", "")))
        policy = RequestPolicy(
            namespace_tag(folder.fingerprint), parse_default(extra.get("default"))
        )
        minimum = extra.get("min_prompt_tokens") or folder.config.serving.min_prompt_tokens
        return cls(folder, policy, int(minimum))

    def info(self) -> KVPredictionInfo:
        """The route's document."""
        if self.folder is None or self.policy is None:
            return KVPredictionInfo(enabled=False, how_to=ENABLE_HINT)
        config = self.folder.config
        history = config.training.get("history") or [None]
        verb = "opt out with" if self.policy.default_on else "opt in with"
        example = (
            OPT_OUT_EXAMPLE if self.policy.default_on else OPT_OUT_EXAMPLE.replace("false", "true")
        )
        return KVPredictionInfo(
            enabled=True,
            predictor=str(self.folder.path),
            fingerprint=self.folder.fingerprint,
            base_model=config.base.path,
            auxiliary=config.aux.origin,
            layer_map=config.layer_map,
            min_prompt_tokens=self.min_prompt_tokens,
            default_on=self.policy.default_on,
            training_steps=config.training.get("steps"),
            last_eval=history[-1],
            how_to=f"prompts of at least {self.min_prompt_tokens} tokens are predicted; "
            f"{verb} {example}",
        )
