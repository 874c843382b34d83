"""vLLM V1 KV connector that fills the prompt's KV cache with predicted K/V.

Scheduler side: for an opted-in prompt of ``n >= min_prompt_tokens`` tokens, report tokens
``local_hit .. n-2`` as externally supplied, so the base model computes only the last prompt
token (vLLM always keeps at least one). Worker side: before the forward pass, run the
auxiliary model, map its K/V, rotate keys with the base RoPE and write them through the
attention backend's own ``do_kv_cache_update`` (the CPU cache layout is ISA-specific, so
indexing the tensor directly would write garbage).

Selected with ``--kv-transfer-config`` (``amortized serve --kv-predictor DIR`` writes it)::

    {"kv_connector": "KVPredictionConnector",
     "kv_connector_module_path": "amortized.serving.kv_prediction.connector",
     "kv_role": "kv_both",
     "kv_connector_extra_config": {"predictor": "DIR", "min_prompt_tokens": 256}}
"""

import ctypes
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)
from vllm.logger import init_logger

from amortized.kv_prediction.config import (
    AttentionGeometry,
    PredictorError,
    check_served_geometry,
    load_predictor_folder,
)
from amortized.kv_prediction.placement import (
    check_single_rank,
    compute_dtype,
    memory_plan,
)
from amortized.kv_prediction.policy import (
    aux_cost_fraction,
    namespace_tag,
    wants_prediction,
    worth_predicting,
)

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.attention.backend import AttentionMetadata
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request

logger = init_logger(__name__)


@dataclass(frozen=True)
class PredictedLoad:
    """One request's span to predict: positions ``start..end-1`` of ``token_ids``."""

    request_id: str
    token_ids: list[int]
    start: int
    end: int
    block_ids: list[int]


@dataclass
class KVPredictionMetadata(KVConnectorMetadata):
    """What the scheduler tells the worker to predict this step."""

    loads: list[PredictedLoad] = field(default_factory=list)


@dataclass(frozen=True)
class ConnectorSettings:
    """Parsed ``kv_connector_extra_config``."""

    predictor: Path
    min_prompt_tokens: int | None = None
    block_aligned: bool = False
    aux_dtype: str | None = None

    @classmethod
    def parse(cls, extra: dict[str, Any]) -> "ConnectorSettings":
        """Validate the extra config; errors name the key to fix."""
        known = {"predictor", "min_prompt_tokens", "block_aligned", "default", "aux_dtype"}
        unknown = sorted(set(extra) - known)
        if unknown:
            raise PredictorError(
                f"kv_connector_extra_config has unknown keys {unknown}; known: {sorted(known)}"
            )
        if not isinstance(extra.get("predictor"), str):
            raise PredictorError(
                'kv_connector_extra_config needs "predictor": the KV predictor folder'
            )
        minimum = extra.get("min_prompt_tokens")
        if minimum is not None and (not isinstance(minimum, int) or minimum < 2):
            raise PredictorError("kv_connector_extra_config.min_prompt_tokens must be an int >= 2")
        aligned = extra.get("block_aligned", False)
        if not isinstance(aligned, bool):
            raise PredictorError("kv_connector_extra_config.block_aligned must be true or false")
        # Checked with the cache dtype by placement.compute_dtype, the one place that reads it.
        aux_dtype = extra.get("aux_dtype")
        aux = None if aux_dtype is None else str(aux_dtype)
        return cls(Path(extra["predictor"]), minimum, aligned, aux)


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Linux /proc/cpuinfo)."""
    try:
        return "amx_tile" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def request_amx_permission() -> bool:
    """Ask Linux for AMX tile state up front (``arch_prctl(ARCH_REQ_XCOMP_PERM)``).

    An earlier vLLM build killed a fresh bf16 engine with SIGILL when its first request
    computed only one token (no large oneDNN GEMM had requested the permission yet). On
    vLLM 0.32 on an AMX Xeon that request survives with or without this call (see
    docs/kv_prediction.md); it stays as a cheap guard, and is a no-op elsewhere.
    """
    if platform.system() != "Linux" or platform.machine() != "x86_64" or not cpu_has_amx():
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    sys_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata = 158, 0x1023, 18
    return int(libc.syscall(sys_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata)) == 0


def engine_device(device_type: str) -> torch.device:
    """The device this worker's model and KV cache are on (a CUDA worker has set its own)."""
    if device_type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(device_type)


def predicted_span_end(prompt_len: int, min_prompt_tokens: int, align_to: int | None) -> int:
    """End (exclusive) of the predicted span: all but the last prompt token, 0 when too short.

    ``align_to`` (a block size) rounds the end down to a block boundary, for the opt-in
    ``block_aligned`` mode; the base then computes the tail tokens exactly.
    """
    if prompt_len < min_prompt_tokens:
        return 0
    end = prompt_len - 1
    return end - end % align_to if align_to else end


def slot_mapping(block_ids: list[int], start: int, end: int, block_size: int) -> torch.Tensor:
    """Paged-cache slots of positions ``start..end-1``."""
    positions = torch.arange(start, end)
    blocks = torch.tensor(block_ids, dtype=torch.long)[positions // block_size]
    return blocks * block_size + positions % block_size


class KVPredictionConnector(KVConnectorBase_V1):
    """Supplies predicted K/V for all prompt tokens but the last."""

    def __init__(
        self,
        vllm_config: "VllmConfig",
        role: KVConnectorRole,
        kv_cache_config: "KVCacheConfig",
    ) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        extra = self._kv_transfer_config.kv_connector_extra_config or {}
        self.settings = ConnectorSettings.parse(dict(extra))
        parallel = vllm_config.parallel_config
        check_single_rank(parallel.tensor_parallel_size, parallel.pipeline_parallel_size)
        self.folder = load_predictor_folder(self.settings.predictor)
        hf_config = vllm_config.model_config.hf_config
        served = AttentionGeometry.from_hf_config(hf_config.to_dict(), "the served model")
        check_served_geometry(self.folder, served, str(vllm_config.model_config.model))
        self.tag = namespace_tag(self.folder.fingerprint)
        self.block_size = vllm_config.cache_config.block_size
        self.min_prompt_tokens = (
            self.settings.min_prompt_tokens or self.folder.config.serving.min_prompt_tokens
        )
        dtype = vllm_config.model_config.dtype
        self.model_dtype: torch.dtype = dtype if isinstance(dtype, torch.dtype) else torch.float32
        self.compute_dtype = compute_dtype(
            self.model_dtype, str(vllm_config.cache_config.cache_dtype), self.settings.aux_dtype
        )
        self.block_aligned = self.settings.block_aligned
        config = self.folder.config
        self.aux_fraction = aux_cost_fraction(
            max(config.layer_map) + 1,
            config.aux.geometry.hidden_size,
            config.base.geometry.num_layers,
            config.base.geometry.hidden_size,
        )
        self._pending: dict[str, PredictedLoad] = {}
        self._predicted_tokens: dict[str, int] = {}
        self.runtime: Any = None
        self._layers: list[tuple[int, Any]] | None = None
        if role == KVConnectorRole.WORKER:
            self.runtime = self._load_runtime(vllm_config, kv_cache_config, hf_config)
        logger.info(
            "KV prediction on: predictor %s (aux %s, layer map %s), prompts >= %d tokens%s",
            self.folder.path,
            self.folder.config.aux.origin,
            self.folder.config.layer_map,
            self.min_prompt_tokens,
            ", block-aligned spans" if self.block_aligned else "",
        )

    def _load_runtime(
        self, vllm_config: "VllmConfig", kv_cache_config: "KVCacheConfig", hf_config: Any
    ) -> Any:
        """The auxiliary model on the engine's device, in the cache's dtype.

        vLLM creates worker connectors after sizing the KV cache and before allocating it,
        so on a GPU the auxiliary model lives in the memory ``--gpu-memory-utilization``
        leaves over; this checks that it fits next to the cache about to be allocated.
        """
        from amortized.kv_prediction.runtime import KVPredictionRuntime

        device = engine_device(str(vllm_config.device_config.device_type))
        if device.type == "cpu":
            request_amx_permission()
        runtime = KVPredictionRuntime(self.folder, hf_config, self.compute_dtype, device)
        config = self.folder.config
        plan = memory_plan(
            runtime.weight_bytes,
            config.aux.geometry,
            config.base.geometry,
            int(vllm_config.scheduler_config.max_num_batched_tokens),
            self.compute_dtype,
        )
        if device.type == "cuda":
            free, total = torch.cuda.mem_get_info(device)
            # Aliased cache tensors would be counted twice: warn rather than refuse.
            kv_bytes = sum(
                int(t.size) for t in kv_cache_config.kv_cache_tensors if not t.host_resident
            )
            problem = plan.shortfall(free + runtime.weight_bytes, total, kv_bytes)
            if problem:
                logger.warning(problem)
        logger.info(
            "KV predictor on %s in %s: %.2f GiB weights, up to %.2f GiB activations per step",
            device,
            self.compute_dtype,
            plan.weights / (1 << 30),
            plan.activations / (1 << 30),
        )
        return runtime

    @property
    def requires_kv_delivery(self) -> bool:
        """Nothing is handed off; predictions are made in place."""
        return False

    # -- scheduler side -----------------------------------------------------------------

    def predicted_end(self, request: "Request") -> int:
        """Last position (exclusive) to predict; 0 when the request gets normal prefill."""
        if request.prompt_token_ids is None:
            return 0
        if not wants_prediction(request.kv_transfer_params, request.cache_salt, self.tag):
            return 0
        return predicted_span_end(
            int(request.num_prompt_tokens),
            self.min_prompt_tokens,
            self.block_size if self.block_aligned else None,
        )

    def get_num_new_matched_tokens(
        self, request: "Request", num_computed_tokens: int
    ) -> tuple[int | None, bool]:
        """Offer every prompt token but the last beyond a local prefix-cache hit, unless the
        hit leaves so little to compute that the base does it faster than the auxiliary model
        would read the whole prompt."""
        end = self.predicted_end(request)
        if not worth_predicting(end, num_computed_tokens, self.aux_fraction):
            return 0, False
        return end - num_computed_tokens, False

    def update_state_after_alloc(
        self, request: "Request", blocks: "KVCacheBlocks", num_external_tokens: int
    ) -> None:
        """Remember where the supplied tokens go; they are predicted in this step."""
        if num_external_tokens <= 0:
            return
        end = self.predicted_end(request)
        prompt = list(request.prompt_token_ids or [])
        self._pending[request.request_id] = PredictedLoad(
            request_id=request.request_id,
            token_ids=prompt[:end],
            start=end - num_external_tokens,
            end=end,
            block_ids=list(blocks.get_block_ids()[0]),
        )
        self._predicted_tokens[request.request_id] = end

    def request_finished(
        self, request: "Request", block_ids: list[int]
    ) -> tuple[bool, dict[str, Any] | None]:
        """Tell the client (``kv_transfer_params`` in the response) what was predicted."""
        predicted = self._predicted_tokens.pop(request.request_id, None)
        if predicted is None:
            return False, None
        return False, {"kv_prediction": True, "predicted_tokens": predicted}

    def build_connector_meta(self, scheduler_output: "SchedulerOutput") -> KVConnectorMetadata:
        """Hand this step's predictions to the worker."""
        meta = KVPredictionMetadata(loads=list(self._pending.values()))
        self._pending.clear()
        return meta

    # -- worker side --------------------------------------------------------------------

    def start_load_kv(self, forward_context: "ForwardContext", **kwargs: Any) -> None:
        """Predict and write K/V for every load in this step, before the forward pass."""
        meta = self._get_connector_metadata()
        if not isinstance(meta, KVPredictionMetadata) or not meta.loads:
            return
        layers = self._attention_layers(forward_context)
        # One auxiliary forward for every prompt predicted in this step.
        spans = [(load.token_ids, load.start, load.end) for load in meta.loads]
        for load, predicted in zip(meta.loads, self.runtime.predict_batch(spans), strict=True):
            slots = slot_mapping(load.block_ids, load.start, load.end, self.block_size)
            slots = slots.to(predicted.keys[0].device)
            for index, layer in layers:
                key = predicted.keys[index].to(self.model_dtype).contiguous()
                value = predicted.values[index].to(self.model_dtype).contiguous()
                layer.impl.do_kv_cache_update(layer, key, value, layer.kv_cache, slots)
            logger.debug(
                "predicted K/V for %s: positions %d..%d", load.request_id, load.start, load.end
            )

    def _attention_layers(self, forward_context: "ForwardContext") -> list[tuple[int, Any]]:
        """``(base layer index, attention layer)`` with a bound KV cache; found once."""
        if self._layers is None:
            from vllm.model_executor.models.utils import extract_layer_index

            self._layers = [
                (extract_layer_index(name), layer)
                for name, layer in forward_context.no_compile_layers.items()
                if isinstance(getattr(layer, "kv_cache", None), torch.Tensor)
                and layer.kv_cache.numel() > 0
                and hasattr(getattr(layer, "impl", None), "do_kv_cache_update")
            ]
        return self._layers

    def wait_for_layer_load(self, layer_name: str) -> None:
        """Loads are synchronous: written before the forward pass starts."""

    def save_kv_layer(
        self,
        layer_name: str,
        kv_layer: torch.Tensor,
        attn_metadata: "AttentionMetadata",
        **kwargs: Any,
    ) -> None:
        """Nothing is saved: predictions are recomputed when needed."""

    def wait_for_save(self) -> None:
        """Nothing is saved."""
