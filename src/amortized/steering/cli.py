"""``amortized steer label|vectors|train|eval|sweep``: the CASAL pipeline over a QA JSONL."""

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amortized.errors import AmortizedError
from amortized.steering.placement import DEVICE_HELP, DTYPE_CHOICES, check_device_spec
from amortized.steering.splits import check_disjoint

if TYPE_CHECKING:
    from amortized.cli_support import OneLineParser
    from amortized.llm.base import LLMBackend


def add_steer_command(subparsers: "argparse._SubParsersAction[OneLineParser]") -> None:
    p = subparsers.add_parser("steer", help="baked-in activation steering (CASAL)")
    sub = p.add_subparsers(dest="steer_command", required=True, parser_class=type(p))

    label = sub.add_parser("label", help="label questions known/unknown by sampling (resumable)")
    label.add_argument("--model", required=True, type=Path, help="model folder")
    label.add_argument("--data", required=True, type=Path, help="QA JSONL: question, answers")
    label.add_argument("--out", required=True, type=Path, help="labels JSONL (resumed if present)")
    label.add_argument("--base-url", help="a server already serving the model (else in-process)")
    label.add_argument("--api-key")
    label.add_argument("--served-model", help="model name on that server")
    label.add_argument("--samples", type=int, default=10)
    label.add_argument("--threshold", type=int, default=7)
    label.add_argument("--temperature", type=float, default=0.7)
    label.add_argument("--top-p", type=float, default=0.8)
    label.add_argument("--top-k", type=int, default=20)
    label.add_argument("--max-tokens", type=int, default=32)
    label.add_argument("--no-chat", action="store_true", help="raw prompts, no chat template")
    label.set_defaults(handler=_label)

    vectors = sub.add_parser("vectors", help="steering vectors from labelled questions")
    vectors.add_argument("--model", required=True, type=Path)
    vectors.add_argument("--labels", required=True, type=Path)
    vectors.add_argument("--layers", default="all", help="comma-separated 0-based layers, or all")
    vectors.add_argument("--out", required=True, type=Path, help="folder for layer-N.safetensors")
    vectors.add_argument("--gguf", type=Path, help="also write a llama.cpp control vector")
    vectors.add_argument("--alpha", type=float, default=1.0, help="scale baked into the GGUF")
    _placement_options(vectors)
    vectors.set_defaults(handler=_vectors)

    train = sub.add_parser("train", help="CASAL: train one layer's MLP, export the checkpoint")
    train.add_argument("--model", required=True, type=Path)
    train.add_argument("--labels", required=True, type=Path)
    train.add_argument("--layer", required=True, type=int)
    train.add_argument("--alpha", type=float, default=4.0)
    train.add_argument("--submodule", choices=("down_proj", "up_proj", "both"), default="down_proj")
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--epochs", type=int, default=3)
    train.add_argument("--out", required=True, type=Path, help="new model folder")
    train.add_argument("--overwrite", action="store_true")
    _placement_options(train)
    train.set_defaults(handler=_train)

    evaluate = sub.add_parser("eval", help="hallucination, refusal and accuracy of a model")
    evaluate.add_argument("--model", required=True, type=Path)
    evaluate.add_argument("--labels", required=True, type=Path, help="labelled eval questions")
    evaluate.add_argument("--vector", type=Path, help="steer at inference with this vector")
    evaluate.add_argument("--alpha", type=float, default=4.0)
    evaluate.add_argument("--answers", type=Path, help="write the answers here (JSONL)")
    evaluate.add_argument(
        "--sweep",
        type=Path,
        help="a `steer sweep --out` result: refuse to score its validation questions",
    )
    _placement_options(evaluate)
    evaluate.set_defaults(handler=_eval)

    sweep = sub.add_parser(
        "sweep", help="inference-time steering per layer: pick the layer on validation data"
    )
    sweep.add_argument("--model", required=True, type=Path)
    sweep.add_argument("--labels", required=True, type=Path, help="labelled training questions")
    sweep.add_argument(
        "--validation",
        type=Path,
        help="labelled validation questions the choice is made on (never the test split)",
    )
    sweep.add_argument("--eval", type=Path, help=argparse.SUPPRESS)
    sweep.add_argument(
        "--test", type=Path, help="the test labels, to refuse a validation set that overlaps them"
    )
    sweep.add_argument(
        "--out", type=Path, help="write the result here; `steer eval --sweep` checks against it"
    )
    sweep.add_argument("--layers", default="all")
    sweep.add_argument("--alphas", default="0.5,1,2,4", help="comma-separated strengths")
    sweep.add_argument("--max-known-drop", type=float, default=0.05)
    _placement_options(sweep)
    sweep.set_defaults(handler=_sweep)

    lora = sub.add_parser(
        "lora", help="export a CASAL checkpoint's change as a LoRA adapter for vllm --enable-lora"
    )
    lora.add_argument("--base", required=True, type=Path, help="the model CASAL was trained on")
    lora.add_argument("--casal", required=True, type=Path, help="the `steer train` checkpoint")
    lora.add_argument("--out", required=True, type=Path, help="adapter folder to write")
    lora.add_argument(
        "--rank",
        type=int,
        help="adapter rank (one vLLM accepts: 1, 8, 16, ...); default: the smallest within "
        "--tolerance",
    )
    lora.add_argument(
        "--tolerance",
        type=float,
        default=0.05,
        help="largest relative (Frobenius) error of the factorised change for the automatic rank",
    )
    lora.add_argument("--overwrite", action="store_true")
    lora.set_defaults(handler=_lora)


def _placement_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=_device, default="auto", help=DEVICE_HELP)
    parser.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        default="auto",
        help="auto: the checkpoint's own dtype on a GPU, float32 on the CPU",
    )


def _device(spec: str) -> str:
    """``--device``'s spelling, checked while parsing (argparse makes it one line)."""
    try:
        return check_device_spec(spec)
    except AmortizedError as error:
        raise argparse.ArgumentTypeError(f"{spec!r} is not a device; use {DEVICE_HELP}") from error


def _model(args: argparse.Namespace, *, steered: bool = True) -> tuple[Any, Any]:
    """``--model`` on ``--device`` in ``--dtype``. A model that is to be read or steered
    inside (``steered``) must be of a supported family, checked before its weights load."""
    from amortized.steering.capture import layout_for
    from amortized.steering.pipeline import load_model

    path: Path = args.model
    config = path / "config.json"
    if not config.is_file():
        raise AmortizedError(f"--model {path}: not a model folder (no config.json)")
    if steered:
        try:
            model_type = json.loads(config.read_text()).get("model_type")
        except (OSError, ValueError, AttributeError) as error:
            raise AmortizedError(f"--model {path}: unreadable config.json ({error})") from error
        layout_for(model_type, f"--model {path}")
    return load_model(path, device=args.device, dtype=args.dtype)


def _labels(path: Path) -> list[Any]:
    from amortized.steering.labelling import read_labels

    if not path.is_file():
        raise AmortizedError(f"{path}: no such labels file (run `amortized steer label`)")
    return read_labels(path)


def _layers(spec: str, model: Any) -> list[int]:
    from amortized.steering.capture import decoder_layers

    count = len(decoder_layers(model))
    if spec == "all":
        return list(range(count))
    try:
        layers = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError as error:
        raise AmortizedError(f"--layers {spec!r}: use comma-separated integers or 'all'") from error
    bad = [x for x in layers if not 0 <= x < count]
    if bad or not layers:
        raise AmortizedError(f"--layers {spec!r}: the model has layers 0..{count - 1}")
    return layers


def _label(args: argparse.Namespace) -> int:
    from amortized.steering.labelling import LabellingOptions, label_counts, label_questions
    from amortized.steering.qa import read_qa

    items = read_qa(args.data)
    try:
        options = LabellingOptions(
            samples=args.samples,
            threshold=args.threshold,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            max_tokens=args.max_tokens,
        )
    except ValueError as error:
        raise AmortizedError(f"bad option: {error}") from error

    async def run(backend: "LLMBackend") -> list[Any]:
        try:
            return await label_questions(
                backend,
                items,
                options=options,
                out=args.out,
                chat=not args.no_chat,
                progress=True,
            )
        finally:
            await backend.close()

    if args.base_url:
        from amortized.llm import OpenAICompatibleBackend

        backend: LLMBackend = OpenAICompatibleBackend(
            args.base_url, args.api_key, args.served_model
        )
    else:
        from vllm import LLM

        from amortized.llm.vllm_local import OfflineLLMBackend

        if not (args.model / "config.json").is_file():
            raise AmortizedError(f"--model {args.model}: not a model folder (no config.json)")
        backend = OfflineLLMBackend(LLM(model=str(args.model), enforce_eager=True, seed=0))
    labels = asyncio.run(run(backend))
    print(json.dumps({"labels": str(args.out), **label_counts(labels)}))
    return 0


def _vectors(args: argparse.Namespace) -> int:
    from amortized.steering.pipeline import vectors_from_labels
    from amortized.steering.vectors import export_control_vector_gguf

    labelled = _labels(args.labels)
    model, tokenizer = _model(args)
    layers = _layers(args.layers, model)
    try:
        vectors = vectors_from_labels(model, tokenizer, labelled, layers, progress=True)
    except ValueError as error:
        raise AmortizedError(str(error)) from error
    args.out.mkdir(parents=True, exist_ok=True)
    files = {
        layer: str(v.save(args.out / f"layer-{layer}.safetensors")) for layer, v in vectors.items()
    }
    summary: dict[str, Any] = {"vectors": files, "norms": {k: v.norm for k, v in vectors.items()}}
    if args.gguf:
        usable = {layer: v.unknown for layer, v in vectors.items() if layer > 0}
        export_control_vector_gguf(usable, args.gguf, alpha=args.alpha, model_hint=args.model.name)
        summary["gguf"] = str(args.gguf)
    print(json.dumps(summary))
    return 0


def _train(args: argparse.Namespace) -> int:
    from amortized.steering.casal import CasalConfig
    from amortized.steering.export import export_checkpoint
    from amortized.steering.pipeline import casal_from_labels, vectors_from_labels

    labelled = _labels(args.labels)
    model, tokenizer = _model(args)
    [layer] = _layers(str(args.layer), model)
    try:
        config = CasalConfig(
            layer=layer,
            alpha=args.alpha,
            submodule=args.submodule,
            lr=args.lr,
            epochs=args.epochs,
        )
        vector = vectors_from_labels(model, tokenizer, labelled, [layer], progress=True)[layer]
    except ValueError as error:
        raise AmortizedError(str(error)) from error
    run = casal_from_labels(model, tokenizer, labelled, vector, config, progress=True)
    out = export_checkpoint(
        args.model,
        args.out,
        run.result.state,
        run.result.provenance(vector),
        overwrite=args.overwrite,
        cast=True,
    )
    print(
        json.dumps(
            {
                "checkpoint": str(out),
                "layer": layer,
                "initial_loss": run.result.initial_loss,
                "final_loss": run.result.final_loss,
                "train_seconds": run.result.wall_seconds,
                "capture_seconds": run.capture_seconds,
            }
        )
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from amortized.steering.evaluation import SteeringSpec, evaluate_model
    from amortized.steering.vectors import SteeringVector

    labelled = _labels(args.labels)
    if args.sweep is not None:
        check_disjoint(
            _sweep_validation(args.sweep), labelled, "the sweep's validation", "--labels"
        )
    model, tokenizer = _model(args, steered=args.vector is not None)
    steer = None
    if args.vector is not None:
        try:
            vector = SteeringVector.load(args.vector)
        except (OSError, ValueError) as error:
            raise AmortizedError(f"--vector {args.vector}: {error}") from error
        steer = SteeringSpec(vector.layer, vector.unknown, args.alpha)
    metrics, answers = evaluate_model(model, tokenizer, labelled, steer=steer, progress=True)
    if args.answers is not None:
        with args.answers.open("w") as handle:
            for item, answer in zip(labelled, answers, strict=True):
                handle.write(
                    json.dumps({"id": item.id, "label": item.label.value, "answer": answer}) + "\n"
                )
    print(json.dumps(metrics.as_dict()))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from amortized.steering.pipeline import layer_sweep

    try:
        alphas = [float(a) for a in args.alphas.split(",") if a.strip()]
    except ValueError as error:
        raise AmortizedError(f"--alphas {args.alphas!r}: use comma-separated numbers") from error
    if args.eval is not None:
        raise AmortizedError(
            "--eval was renamed --validation: choose the layer on validation data, and score "
            "the test split once with `amortized steer eval`"
        )
    if args.validation is None:
        raise AmortizedError("--validation is required: the labelled questions to choose on")
    train, validation = _labels(args.labels), _labels(args.validation)
    check_disjoint(train, validation, "--labels", "--validation")
    if args.test is not None:
        check_disjoint(validation, _labels(args.test), "--validation", "--test")
    model, tokenizer = _model(args)
    layers = _layers(args.layers, model)
    try:
        result = layer_sweep(
            model,
            tokenizer,
            train,
            validation,
            layers,
            alphas,
            max_known_drop=args.max_known_drop,
            progress=True,
        )
    except ValueError as error:
        raise AmortizedError(str(error)) from error
    for row in result.rows:
        m = row.metrics
        print(
            f"layer {row.layer:3d} alpha {row.alpha:5.2f}: hallucination {m.hallucination:.2f} "
            f"known accuracy {m.known_accuracy:.2f} refusal on known {m.refusal_on_known:.2f}",
            file=sys.stderr,
        )
    best = result.best
    choice = result.choice
    summary = {
        "base": result.base.as_dict(),
        "best": None
        if best is None
        else {"layer": best.layer, "alpha": best.alpha, **best.metrics.as_dict()},
        "choice": None
        if choice is None
        else {"layer": choice.layer, "alpha": choice.alpha, "rule": "best" if best else "fallback"},
        "rows": [{"layer": r.layer, "alpha": r.alpha, **r.metrics.as_dict()} for r in result.rows],
        "validation": {
            "path": str(args.validation),
            "ids": [item.id for item in validation],
            "questions": [item.question for item in validation],
        },
    }
    if args.out is not None:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "validation"}))
    return 0


def _sweep_validation(path: Path) -> list[Any]:
    """The validation questions a ``steer sweep --out`` file recorded."""
    from amortized.steering.qa import QAItem

    try:
        recorded = json.loads(path.read_text())["validation"]
        pairs = zip(recorded["ids"], recorded["questions"], strict=True)
        return [QAItem(id=str(i), question=str(q), answers=()) for i, q in pairs]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise AmortizedError(
            f"--sweep {path}: not a `steer sweep --out` result ({error})"
        ) from None


def _lora(args: argparse.Namespace) -> int:
    from amortized.steering.lora import write_lora_adapter

    adapter = write_lora_adapter(
        args.base,
        args.casal,
        args.out,
        rank=args.rank,
        tolerance=args.tolerance,
        overwrite=args.overwrite,
    )
    print(
        f"serve it with: amortized serve {args.base} -- --enable-lora --max-lora-rank "
        f"{adapter.rank} --lora-modules casal={adapter.path}",
        file=sys.stderr,
    )
    summary = {
        "adapter": str(adapter.path),
        "rank": adapter.rank,
        "layer": adapter.layer,
        "target_modules": list(adapter.target_modules),
        "relative_error": adapter.relative_error,
        "error_by_rank": adapter.error_by_rank,
    }
    print(json.dumps(summary))
    return 0
