"""Joint training of the auxiliary model and the K/V maps against a frozen base model.

Loss (paper, weights 1/1/1): base cross-entropy when every base layer attends only to
predicted K/V (teacher-forced over all positions) + auxiliary cross-entropy + the L1
distance between predicted and true pre-RoPE K and V, summed over base layers as the
reference implementation does (corenet ``cross_entropy_for_kv_prediction``; ``kv_loss="mean"``
divides it by the number of layers, as this project did before).

Windows start at document starts (the tokenizer's BOS, when it adds one, is position 0), so
the first positions a served prompt has are trained too.
"""

import copy
import json
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import nn
from tqdm import tqdm

from amortized.kv_prediction.config import (
    AUX_DIR_NAME,
    CONFIG_NAME,
    WEIGHTS_NAME,
    AttentionGeometry,
    AuxModelRef,
    BaseModelRef,
    PredictorConfig,
    PredictorError,
    PredictorFolder,
    ServingDefaults,
    WeightsRef,
    default_layer_map,
    load_predictor_folder,
    model_config_sha256,
)
from amortized.kv_prediction.predictor import KVPredictor
from amortized.kv_prediction.projections import (
    capture_kv,
    decoder_layers,
    replace_kv,
    run_capture,
)
from amortized.models.training import warmup_cosine_lr

CHECKPOINT_NAME = "checkpoint.pt"
PLAN_AFTER_STEPS = 6
Init = Literal["lstsq", "identity", "random"]
KVLoss = Literal["sum", "mean"]
Precision = Literal["fp32", "bf16"]
Objective = Literal["kvp", "lm"]
LayerAlignment = Literal["input", "block"]
LAYER_ALIGNMENTS: tuple[LayerAlignment, ...] = get_args(LayerAlignment)


@dataclass(frozen=True)
class TrainingConfig:
    """Everything ``amortized kvp train`` needs; recorded in the checkpoint to resume safely."""

    base: str
    data: str
    out: str
    aux: str | None = None
    prune: float | None = None
    layer_map: LayerAlignment = "input"
    seq_len: int = 256
    batch_size: int = 8
    steps: int = 300
    lr: float = 1e-3
    warmup_steps: int = 20
    eval_fraction: float = 0.05
    eval_batches: int = 4
    checkpoint_every: int = 100
    init: Init = "lstsq"
    min_prompt_tokens: int = 256
    seed: int = 0
    device: str = "auto"
    kv_loss: KVLoss = "sum"
    precision: Precision = "fp32"
    """``bf16``: the frozen base is held in bf16 and forwards run under autocast; the
    auxiliary model, the maps and the optimizer state stay fp32."""
    gradient_checkpointing: bool = False
    objective: Objective = "kvp"
    """``lm``: train the auxiliary model on its own language-model loss only (the maps stay
    at their initial fit): the "smaller model" baseline the paper compares against."""
    time_budget_s: float | None = None
    """Wall-clock budget: after a few steps the step count is set so that training ends
    within it (replaces ``steps``), so runs of different cost get the same budget."""

    def __post_init__(self) -> None:
        if (self.aux is None) == (self.prune is None):
            raise PredictorError("give exactly one of --aux PATH or --prune FRACTION")
        if self.prune is not None and not 0 < self.prune < 1:
            raise PredictorError(f"--prune must be between 0 and 1 (e.g. 0.25), not {self.prune}")
        for name in ("seq_len", "batch_size", "steps", "checkpoint_every", "eval_batches"):
            if getattr(self, name) < 1:
                raise PredictorError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0 < self.eval_fraction < 1:
            raise PredictorError("--eval-fraction must be between 0 and 1")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise PredictorError("--time-budget must be a positive number of minutes")

    def resume_key(self) -> dict[str, Any]:
        """Settings that must not change between a run and its resumption."""
        keep = (
            "base",
            "data",
            "aux",
            "prune",
            "layer_map",
            "seq_len",
            "batch_size",
            "init",
            "seed",
            "kv_loss",
            "objective",
            "time_budget_s",
        )
        return {k: getattr(self, k) for k in keep}


@dataclass
class EvalResult:
    """Held-out metrics; ``base_loss_exact`` is the floor ``base_loss_predicted`` aims at."""

    step: int
    kv_l1: float
    base_loss_predicted: float
    base_loss_exact: float
    aux_loss: float


@dataclass
class TrainingState:
    """What a checkpoint restores."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    planned_steps: int | None = None
    """Set by a time budget once the step time is known; ``config.steps`` otherwise."""
    elapsed_s: float = 0.0


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


LAYER_KEY = re.compile(r"^(.*\.layers\.)(\d+)(\..*)$")


def prune_layers(model: nn.Module, fraction: float) -> tuple[nn.Module, list[int]]:
    """A float32 model of ``model``'s class keeping every ``round(1/fraction)``-th layer.

    Built at the pruned size and filled from the kept layers' weights, so the peak is base +
    auxiliary, never two bases (a deep copy of an 8B base would need another 16-32 GB).
    """
    step = max(1, round(1 / fraction))
    kept = list(range(0, len(decoder_layers(model)), step))
    config: Any = copy.deepcopy(model.config)
    config.num_hidden_layers = len(kept)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [config.layer_types[i] for i in kept]
    device = next(model.parameters()).device
    with torch.device(device):
        aux: nn.Module = type(model)(config)
    new_index = {old: new for new, old in enumerate(kept)}
    weights: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        match = LAYER_KEY.match(name)
        if match is None:
            weights[name] = tensor
        elif int(match.group(2)) in new_index:
            weights[f"{match.group(1)}{new_index[int(match.group(2))]}{match.group(3)}"] = tensor
    aux.load_state_dict({k: v.float() for k, v in weights.items()})
    return aux.float(), kept


def pruned_layer_map(
    base_layers: int, kept: Sequence[int], alignment: LayerAlignment = "input"
) -> list[int]:
    """Which auxiliary layer each base layer's K/V are predicted from.

    ``block`` (the paper's): base layer i reads the last kept layer at or below it, i//4
    for every 4th kept. ``input``: base layer i reads the deepest auxiliary layer whose
    *input* has passed through no more base layers than base layer i's input has. K/V are
    linear in a layer's input, and aux layer 1's input is exactly base layer 1's at the
    start, so the early base layers get contextual K/V instead of token-local ones (the
    block map feeds base layers 1-3 from aux layer 0, which has seen no context at all).
    """
    if alignment == "block":
        return [max(j for j, k in enumerate(kept) if k <= i) for i in range(base_layers)]
    depth = [0, *(k + 1 for k in kept[:-1])]  # base layers behind each aux layer's input
    return [max(j for j, d in enumerate(depth) if d <= i) for i in range(base_layers)]


def load_documents(path: str | os.PathLike[str], tokenizer: Any) -> list[list[int]]:
    """Token ids of each document, BOS (when the tokenizer adds one) and EOS included.

    Documents: the records of a ``.jsonl`` (``{"text"}`` or ``{"messages"}``, the latter
    through the chat template), or the blocks of a ``.txt`` separated by blank lines.
    """
    file = Path(path)
    if not file.is_file():
        raise PredictorError(f"--data {file} does not exist")
    texts: list[str] = []
    templated: list[bool] = []
    if file.suffix == ".jsonl":
        for number, line in enumerate(file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PredictorError(f"{file}:{number} is not JSON ({exc.msg})") from exc
            if isinstance(record, dict) and isinstance(record.get("text"), str):
                texts.append(record["text"])
                templated.append(False)
            elif isinstance(record, dict) and isinstance(record.get("messages"), list):
                texts.append(tokenizer.apply_chat_template(record["messages"], tokenize=False))
                templated.append(True)
            else:
                raise PredictorError(f"{file}:{number} needs a 'text' or 'messages' field")
    else:
        blocks = re.split(r"\n\s*\n", file.read_text())
        texts = [block.strip() for block in blocks if block.strip()]
        templated = [False] * len(texts)
    tokenizer.model_max_length = 1 << 62  # we cut windows ourselves
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    documents = []
    for text, is_templated in zip(texts, templated, strict=True):
        # A chat template writes its own BOS; plain text gets the tokenizer's, if any.
        ids = tokenizer(text, add_special_tokens=not is_templated)["input_ids"]
        documents.append([*ids, eos])
    return documents


def document_windows(documents: Sequence[Sequence[int]], seq_len: int) -> list[list[int]]:
    """Windows of ``seq_len`` tokens, each starting at a document start.

    A short document is followed by the next ones until the window is full (the one cut
    off is not continued elsewhere); a long one gives several windows, the first at its
    start. Nothing ever starts mid-document unless the document is longer than a window.
    """
    windows: list[list[int]] = []
    index = 0
    while index < len(documents):
        document = list(documents[index])
        if len(document) >= seq_len:
            windows.extend(
                document[i : i + seq_len] for i in range(0, len(document) - seq_len + 1, seq_len)
            )
            index += 1
            continue
        window = document
        index += 1
        while len(window) < seq_len and index < len(documents):
            window = [*window, *documents[index]]
            index += 1
        if len(window) >= seq_len:
            windows.append(window[:seq_len])
    return windows


def split_windows(
    documents: Sequence[Sequence[int]], seq_len: int, eval_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, seq_len]`` training and held-out windows; held-out ones come from the last
    documents, so no document is in both."""
    held_docs = max(1, round(len(documents) * eval_fraction))
    if len(documents) - held_docs >= 1:
        train = document_windows(documents[:-held_docs], seq_len)
        held = document_windows(documents[-held_docs:], seq_len)
    else:  # one document: split its windows instead
        train = document_windows(documents, seq_len)
        count = max(1, round(len(train) * eval_fraction))
        train, held = train[:-count], train[-count:]
    if not held and len(train) >= 2:  # the held-out documents were too short for a window
        count = max(1, round(len(train) * eval_fraction))
        train, held = train[:-count], train[-count:]
    if not train or not held:
        total = sum(len(d) for d in documents)
        raise PredictorError(
            f"--data has {total} tokens in {len(documents)} documents, too few for a "
            f"training and a held-out window of --seq-len {seq_len}"
        )
    return torch.tensor(train, dtype=torch.long), torch.tensor(held, dtype=torch.long)


class KVPredictionTrainer:
    """Trains the maps and the auxiliary model; the base model is frozen throughout."""

    def __init__(self, config: TrainingConfig, log: Callable[[str], None] = print) -> None:
        from transformers import AutoTokenizer

        from amortized.kv_prediction.runtime import load_hf_model

        self.config = config
        self.log = log
        self.out = Path(config.out)
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        self.base_path = Path(config.base).expanduser().resolve()
        self.base_geometry = AttentionGeometry.from_folder(self.base_path)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.base_path))
        base_dtype = torch.bfloat16 if config.precision == "bf16" else torch.float32
        self.base: Any = load_hf_model(self.base_path, base_dtype).to(self.device)
        self.base.requires_grad_(False)
        self.aux: Any
        if config.prune is not None:
            self.aux, kept = prune_layers(self.base, config.prune)
            self.layer_map = pruned_layer_map(self.base_geometry.num_layers, kept, config.layer_map)
            self.aux_origin = f"prune:{config.prune} (base layers {kept}, {config.layer_map} map)"
        else:
            aux_path = Path(str(config.aux)).expanduser().resolve()
            self.aux = load_hf_model(aux_path, torch.float32).to(self.device)
            aux_geometry = AttentionGeometry.from_folder(aux_path)
            if aux_geometry.vocab_size != self.base_geometry.vocab_size:
                raise PredictorError(
                    f"--aux {aux_path} has vocab_size {aux_geometry.vocab_size}, the base "
                    f"{self.base_geometry.vocab_size}; both must share one tokenizer"
                )
            self.layer_map = default_layer_map(
                self.base_geometry.num_layers, aux_geometry.num_layers
            )
            self.aux_origin = str(aux_path)
        self.aux.requires_grad_(True)
        self.aux.train()
        if config.gradient_checkpointing:
            # transformers checkpoints only modules in training mode; the frozen base has no
            # dropout in the supported families, so train mode changes nothing else there.
            model: Any
            for model in (self.aux, self.base):
                model.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False}
                )
            self.base.train()
        self.aux_geometry = AttentionGeometry.from_hf_config(
            self.aux.config.to_dict(), "auxiliary model"
        )
        self.maps = KVPredictor(self.aux_geometry, self.base_geometry, self.layer_map).to(
            self.device
        )
        documents = load_documents(config.data, self.tokenizer)
        self.train_chunks, self.eval_chunks = split_windows(
            documents, config.seq_len, config.eval_fraction
        )
        params = [*self.aux.parameters(), *self.maps.parameters()]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
        self.state = TrainingState()
        self.step_seconds: list[float] = []
        """Wall time of each step this process ran (recorded with the predictor)."""

    # -- batches and losses -------------------------------------------------------------

    def batch(self, step: int) -> torch.Tensor:
        """The training batch for ``step``; a function of the step so resuming is exact."""
        rng = random.Random(self.config.seed * 1_000_003 + step)
        rows = [rng.randrange(len(self.train_chunks)) for _ in range(self.config.batch_size)]
        return self.train_chunks[rows].to(self.device)

    def true_kv(self, ids: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The base model's own pre-RoPE K/V (no gradient)."""
        with torch.no_grad():
            return run_capture(self.base, ids, stop_after_layer=self.base_geometry.num_layers - 1)

    def autocast(self) -> Any:
        """bf16 autocast on the training device, or nothing for fp32."""
        enabled = self.config.precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def lm_losses(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """The auxiliary model's language-model loss alone, backpropagated (``objective="lm"``)."""
        with self.autocast():
            aux_loss = self.aux(input_ids=ids, labels=ids, use_cache=False).loss.float()
        aux_loss.backward()
        return {"total": aux_loss, "aux": aux_loss.detach()}

    def losses(self, ids: torch.Tensor, *, backward: bool = False) -> dict[str, torch.Tensor]:
        """The three loss terms and their sum for one batch; ``backward`` also backpropagates.

        The backward pass runs while the K/V hooks are still in place: with gradient
        checkpointing it recomputes layer forwards, which must see the predicted K/V again.
        """
        with self.autocast():
            true_k, true_v = self.true_kv(ids)
        with capture_kv(self.aux) as (aux_k, aux_v):
            with self.autocast():
                aux_loss = self.aux(input_ids=ids, labels=ids, use_cache=False).loss
                pred_k, pred_v = self.maps(
                    [k for k in aux_k if k is not None], [v for v in aux_v if v is not None]
                )
            with replace_kv(self.base, pred_k, pred_v):
                with self.autocast():
                    base_loss = self.base(input_ids=ids, labels=ids, use_cache=False).loss
                per_layer = torch.stack(
                    [
                        (pk.float() - tk.float()).abs().mean()
                        + (pv.float() - tv.float()).abs().mean()
                        for pk, tk, pv, tv in zip(pred_k, true_k, pred_v, true_v, strict=True)
                    ]
                )
                kv = per_layer.sum() if self.config.kv_loss == "sum" else per_layer.mean()
                total = base_loss.float() + aux_loss.float() + kv
                if backward:
                    total.backward()
        return {
            "total": total,
            "base": base_loss.float(),
            "aux": aux_loss.float(),
            "kv_l1": per_layer.mean().detach(),
        }

    @torch.no_grad()
    def evaluate(self) -> EvalResult:
        """Held-out K/V L1, base loss on predicted vs exact K/V, auxiliary loss."""
        was_training = self.aux.training
        self.aux.eval()
        sums = {"kv_l1": 0.0, "base": 0.0, "aux": 0.0, "exact": 0.0}
        size = self.config.batch_size
        batches = [self.eval_chunks[i : i + size] for i in range(0, len(self.eval_chunks), size)][
            : self.config.eval_batches
        ]
        for chunk in batches:
            ids = chunk.to(self.device)
            terms = self.losses(ids)
            sums["kv_l1"] += float(terms["kv_l1"])
            sums["base"] += float(terms["base"])
            sums["aux"] += float(terms["aux"])
            with self.autocast():
                exact = self.base(input_ids=ids, labels=ids, use_cache=False).loss
            sums["exact"] += float(exact)
        self.aux.train(was_training)
        n = len(batches)
        return EvalResult(
            step=self.state.step,
            kv_l1=sums["kv_l1"] / n,
            base_loss_predicted=sums["base"] / n,
            base_loss_exact=sums["exact"] / n,
            aux_loss=sums["aux"] / n,
        )

    # -- initialisation -----------------------------------------------------------------

    @torch.no_grad()
    def initialise_maps(self) -> None:
        """Start the maps at a closed-form least-squares fit (or identity / random)."""
        if self.config.init == "random":
            return
        if self.config.init == "identity":
            self.maps.set_identity()
            return
        ids = torch.cat([self.batch(-1 - i) for i in range(4)])
        aux_k, aux_v = run_capture(self.aux, ids)
        true_k, true_v = self.true_kv(ids)
        self.maps.fit_least_squares(aux_k, aux_v, true_k, true_v)

    # -- checkpoints --------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        """Atomically write everything needed to continue from this step."""
        self.out.mkdir(parents=True, exist_ok=True)
        payload = {
            "resume_key": self.config.resume_key(),
            "step": self.state.step,
            "history": self.state.history,
            "aux": self.aux.state_dict(),
            "maps": self.maps.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "planned_steps": self.state.planned_steps,
            "elapsed_s": self.state.elapsed_s,
        }
        tmp = self.out / f".{CHECKPOINT_NAME}.tmp"
        torch.save(payload, tmp)
        os.replace(tmp, self.out / CHECKPOINT_NAME)

    def load_checkpoint(self) -> None:
        """Continue from ``out/checkpoint.pt``; refuses one made with other settings."""
        path = self.out / CHECKPOINT_NAME
        try:
            payload = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as exc:  # torch raises several unrelated types for bad files
            raise PredictorError(f"cannot read checkpoint {path} ({exc})") from exc
        if payload.get("resume_key") != self.config.resume_key():
            raise PredictorError(
                f"{path} was made with other settings ({payload.get('resume_key')}); "
                "use the same --base/--aux/--prune/--data/--seq-len/--batch-size/--seed "
                "or another --out"
            )
        self.aux.load_state_dict(payload["aux"])
        self.maps.load_state_dict(payload["maps"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state = TrainingState(
            step=int(payload["step"]),
            history=list(payload["history"]),
            planned_steps=payload.get("planned_steps"),
            elapsed_s=float(payload.get("elapsed_s", 0.0)),
        )

    @property
    def total_steps(self) -> int:
        """Where training ends: the time budget's plan once made, else ``config.steps``."""
        return self.state.planned_steps or self.config.steps

    def plan_steps(self, step_seconds: float) -> None:
        """Fix the step count that fits the time budget (leaving room for the evaluations)."""
        budget = self.config.time_budget_s
        if budget is None or self.state.planned_steps is not None:
            return
        remaining = max(0.0, budget - self.state.elapsed_s)
        evals_per_step = 1 / self.config.checkpoint_every
        per_step = step_seconds * (1 + evals_per_step * self.config.eval_batches)
        self.state.planned_steps = max(
            self.state.step + 1, self.state.step + int(remaining / per_step)
        )
        self.log(
            f"time budget {budget / 60:.1f} min at {step_seconds:.2f} s/step: "
            f"{self.state.planned_steps} steps"
        )

    # -- the loop -----------------------------------------------------------------------

    def train(self, resume: bool = False) -> PredictorFolder:
        """Run to ``config.steps`` (resuming if asked), evaluate, and write the predictor."""
        checkpoint = self.out / CHECKPOINT_NAME
        if checkpoint.exists() and not resume:
            raise PredictorError(
                f"{self.out} already has a training checkpoint; pass --resume to continue "
                "it or choose another --out"
            )
        if resume and checkpoint.exists():
            self.load_checkpoint()
            self.log(f"resuming from step {self.state.step}")
        else:
            self.initialise_maps()
            start = self.evaluate()
            self.state.history.append(asdict(start))
            self.log(_describe(start, "initial"))
        bar = tqdm(total=self.total_steps, initial=self.state.step, desc="kvp train", unit="step")
        timed = self.step_seconds
        while self.state.step < self.total_steps:
            started = time.perf_counter()
            for group in self.optimizer.param_groups:
                group["lr"] = warmup_cosine_lr(
                    self.state.step, self.config.lr, self.config.warmup_steps, self.total_steps
                )
            self.optimizer.zero_grad(set_to_none=True)
            ids = self.batch(self.state.step)
            if self.config.objective == "lm":
                terms = self.lm_losses(ids)
            else:
                terms = self.losses(ids, backward=True)
            torch.nn.utils.clip_grad_norm_(
                [*self.aux.parameters(), *self.maps.parameters()], max_norm=1.0
            )
            self.optimizer.step()
            self.state.step += 1
            spent = time.perf_counter() - started
            self.state.elapsed_s += spent
            timed.append(spent)
            if len(timed) == PLAN_AFTER_STEPS:  # the first step includes one-off warm-up
                self.plan_steps(sum(timed[1:]) / (len(timed) - 1))
                bar.total = self.total_steps
            bar.update(1)
            bar.set_postfix({k: f"{v.item():.3f}" for k, v in terms.items() if k != "total"})
            if self.state.step % self.config.checkpoint_every == 0:
                started = time.perf_counter()
                result = self.evaluate()
                self.state.history.append(asdict(result))
                bar.write(_describe(result, "eval"))
                self.state.elapsed_s += time.perf_counter() - started
                self.save_checkpoint()
        bar.close()
        if not self.state.history or self.state.history[-1]["step"] != self.state.step:
            self.state.history.append(asdict(self.evaluate()))
            self.save_checkpoint()
        return self.export()

    def export(self) -> PredictorFolder:
        """Write ``aux/``, the maps and ``kv_predictor.json`` into ``out``."""
        return write_predictor_folder(
            self.out,
            base_path=self.base_path,
            base_geometry=self.base_geometry,
            aux_model=self.aux,
            aux_geometry=self.aux_geometry,
            aux_origin=self.aux_origin,
            tokenizer=self.tokenizer,
            maps=self.maps,
            min_prompt_tokens=self.config.min_prompt_tokens,
            training={
                "steps": self.state.step,
                "train_seconds": round(self.state.elapsed_s, 1),
                "step_seconds": [round(t, 3) for t in self.step_seconds],
                "settings": asdict(self.config),
                "history": self.state.history,
            },
        )


def write_predictor_folder(
    out: Path,
    *,
    base_path: Path,
    base_geometry: AttentionGeometry,
    aux_model: Any,
    aux_geometry: AttentionGeometry,
    aux_origin: str,
    tokenizer: Any,
    maps: KVPredictor,
    min_prompt_tokens: int,
    training: dict[str, Any] | None = None,
) -> PredictorFolder:
    """Save the auxiliary model (with a manifest), the maps and the config; load it back."""
    from amortized.models.folder import sha256_file, write_manifest

    out.mkdir(parents=True, exist_ok=True)
    aux_dir = out / AUX_DIR_NAME
    shutil.rmtree(aux_dir, ignore_errors=True)
    aux_model.save_pretrained(aux_dir, safe_serialization=True)
    tokenizer.save_pretrained(aux_dir)
    write_manifest(aux_dir, {"kind": "kv-prediction-auxiliary", "origin": aux_origin})
    weights = out / WEIGHTS_NAME
    maps.save(weights)
    config = PredictorConfig(
        base=BaseModelRef(
            path=str(base_path),
            geometry=base_geometry,
            config_sha256=model_config_sha256(base_path),
        ),
        aux=AuxModelRef(path=AUX_DIR_NAME, geometry=aux_geometry, origin=aux_origin),
        layer_map=maps.layer_map,
        weights=WeightsRef(file=WEIGHTS_NAME, sha256=sha256_file(weights)),
        serving=ServingDefaults(min_prompt_tokens=min_prompt_tokens),
        training=training or {},
    )
    (out / CONFIG_NAME).write_text(config.model_dump_json(indent=2) + "\n")
    return load_predictor_folder(out)


def _describe(result: EvalResult, label: str) -> str:
    return (
        f"{label} @ step {result.step}: kv_l1 {result.kv_l1:.4f}, base loss on predicted KV "
        f"{result.base_loss_predicted:.4f} (exact KV {result.base_loss_exact:.4f}), "
        f"aux loss {result.aux_loss:.4f}"
    )


def write_identity_predictor(
    base: str | os.PathLike[str], out: str | os.PathLike[str]
) -> PredictorFolder:
    """A predictor whose auxiliary model *is* the base and whose maps are identities.

    It reproduces the base's own K/V, so serving with it must match plain serving: the
    end-to-end exactness check for the connector and the cache writes.
    """
    from transformers import AutoTokenizer

    from amortized.kv_prediction.runtime import load_hf_model

    base_path = Path(base).expanduser().resolve()
    geometry = AttentionGeometry.from_folder(base_path)
    maps = KVPredictor(geometry, geometry, list(range(geometry.num_layers)))
    maps.set_identity()
    return write_predictor_folder(
        Path(out),
        base_path=base_path,
        base_geometry=geometry,
        aux_model=load_hf_model(base_path, torch.float32),
        aux_geometry=geometry,
        aux_origin="identity (aux = base)",
        tokenizer=AutoTokenizer.from_pretrained(str(base_path)),
        maps=maps,
        min_prompt_tokens=16,
    )
