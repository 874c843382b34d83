"""``amortized kvp``: train, inspect and make exactness-check predictors (imports lazily)."""

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amortized.cli_support import OneLineParser


def add_kvp_command(subparsers: "argparse._SubParsersAction[OneLineParser]") -> None:
    """Register ``amortized kvp {train,show,identity}``."""
    p = subparsers.add_parser("kvp", help="KV-prediction prefill: train and inspect predictors")
    sub = p.add_subparsers(dest="kvp_command", required=True, parser_class=type(p))

    train = sub.add_parser(
        "train", help="train an auxiliary model + K/V maps against a frozen base model"
    )
    train.add_argument("--base", required=True, help="base model folder (frozen)")
    aux = train.add_mutually_exclusive_group(required=True)
    aux.add_argument("--aux", help="a smaller model of the same family and tokenizer")
    aux.add_argument(
        "--prune", type=float, help="layer-pruned copy of the base: 0.25 keeps every 4th layer"
    )
    train.add_argument(
        "--layer-map",
        choices=("input", "block"),
        default="input",
        help="with --prune: which aux layer predicts each base layer's K/V; 'input' aligns "
        "layer inputs by depth, 'block' is the paper's i//4 (see docs/kv_prediction.md)",
    )
    train.add_argument("--data", required=True, help=".txt, or .jsonl with text/messages")
    train.add_argument("--out", required=True, help="predictor folder to write")
    train.add_argument("--steps", type=int, default=300)
    train.add_argument("--seq-len", type=int, default=256)
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--checkpoint-every", type=int, default=100, help="also evaluates")
    train.add_argument("--eval-batches", type=int, default=4)
    train.add_argument("--init", choices=("lstsq", "identity", "random"), default="lstsq")
    train.add_argument(
        "--min-prompt-tokens", type=int, default=256, help="serving threshold to record"
    )
    train.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    train.add_argument(
        "--kv-loss",
        choices=("sum", "mean"),
        default="sum",
        help="K/V L1 over base layers: summed as the paper's reference code (default) or averaged",
    )
    train.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: frozen base in bf16 and autocast forwards; trained weights stay fp32",
    )
    train.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute layer activations in the backward pass (less memory, ~30%% slower)",
    )
    train.add_argument(
        "--objective",
        choices=("kvp", "lm"),
        default="kvp",
        help="lm: train the auxiliary model on language-model loss alone (a smaller-model "
        "baseline; the maps keep their initial fit)",
    )
    train.add_argument(
        "--time-budget",
        type=float,
        metavar="MINUTES",
        help="set the step count after a few timed steps so training fits this budget "
        "(instead of --steps)",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    train.set_defaults(handler=_train)

    show = sub.add_parser("show", help="check a predictor folder and print its summary")
    show.add_argument("predictor")
    show.add_argument("--base", help="also check that it fits this served model folder")
    show.set_defaults(handler=_show)

    identity = sub.add_parser(
        "identity", help="exactness-check predictor: auxiliary = base, identity maps"
    )
    identity.add_argument("--base", required=True)
    identity.add_argument("--out", required=True)
    identity.set_defaults(handler=_identity)


def _train(args: argparse.Namespace) -> int:
    from amortized.kv_prediction.training import KVPredictionTrainer, TrainingConfig

    config = TrainingConfig(
        base=args.base,
        data=args.data,
        out=args.out,
        aux=args.aux,
        prune=args.prune,
        layer_map=args.layer_map,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        steps=args.steps,
        lr=args.lr,
        checkpoint_every=args.checkpoint_every,
        eval_batches=args.eval_batches,
        init=args.init,
        min_prompt_tokens=args.min_prompt_tokens,
        seed=args.seed,
        device=args.device,
        kv_loss=args.kv_loss,
        precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing,
        objective=args.objective,
        time_budget_s=None if args.time_budget is None else args.time_budget * 60,
    )
    folder = KVPredictionTrainer(config).train(resume=args.resume)
    serve = f"amortized serve {args.base} --kv-predictor {folder.path}"
    print(f"wrote {folder.path}; serve it with: {serve}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from amortized.kv_prediction.config import check_fits_base, load_predictor_folder

    folder = load_predictor_folder(args.predictor)
    config = folder.config
    summary = {
        "predictor": str(folder.path),
        "fingerprint": folder.fingerprint,
        "base": config.base.path,
        "auxiliary": config.aux.origin,
        "layer_map": config.layer_map,
        "min_prompt_tokens": config.serving.min_prompt_tokens,
        "training_steps": config.training.get("steps"),
        "last_eval": (config.training.get("history") or [None])[-1],
    }
    if args.base:
        summary["fits_base"] = args.base
        summary["warnings"] = check_fits_base(folder, args.base)
    print(json.dumps(summary, indent=2))
    return 0


def _identity(args: argparse.Namespace) -> int:
    from amortized.kv_prediction.training import write_identity_predictor

    folder = write_identity_predictor(args.base, args.out)
    print(f"wrote {folder.path}")
    return 0
