"""The ``amortized`` command. Each capability adds its subcommands through ``COMMANDS``.

Errors the user can fix end the command with one line and a non-zero exit code.
"""

import argparse
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from amortized import __version__
from amortized.errors import AmortizedError

Handler = Callable[[argparse.Namespace], int]


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (no usage dump), pointing at --help."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments"):
            message += "; vLLM options go after `--` (amortized serve MODEL -- --max-model-len 512)"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def json_object_option(value: str, flag: str) -> dict[str, Any]:
    """A command-line option holding a JSON object, or a one-line error naming ``flag``."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise AmortizedError(f"{flag} is not JSON ({error.msg} at {error.pos})") from error
    if not isinstance(parsed, dict):
        raise AmortizedError(f"{flag} must be a JSON object")
    return parsed


def _add_serve(subparsers: "argparse._SubParsersAction[OneLineParser]") -> None:
    from amortized.serving.launcher import DEFAULT_HOST, DEFAULT_PORT

    p = subparsers.add_parser(
        "serve",
        help="start vLLM with amortized's routes (builds the default model if needed)",
        description="Start an OpenAI-compatible vLLM server with amortized's routes. vLLM "
        "options go after `--`: amortized serve MODEL -- --max-model-len 1024",
    )
    p.add_argument(
        "model",
        nargs="?",
        help="local model folder or hub id (default: the locally built default model)",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (%(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (%(default)s)")
    p.add_argument(
        "--cache-dir",
        help="where locally built models live (default: $AMORTIZED_CACHE_DIR or the XDG cache)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the equivalent `vllm serve` command and exit"
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
    from amortized.serving import launcher

    if not args.dry_run:
        launcher.check_port_free(args.host, args.port)
    kv_prediction = None
    if args.kv_predictor is not None:
        kv_prediction = launcher.KVPredictionOptions(
            args.kv_predictor, args.kv_prediction_min_tokens, args.kv_prediction_default == "on"
        )
    elif args.kv_prediction_min_tokens is not None:
        raise AmortizedError("--kv-prediction-min-tokens needs --kv-predictor DIR")
    plan = launcher.plan_launch(
        args.model,
        args.host,
        args.port,
        args.vllm_args,
        args.cache_dir,
        kv_prediction=kv_prediction,
    )
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.dry_run:
        print(plan.shell_command())
        return 0
    launcher.run(plan)
    return 0


def _add_models(subparsers: "argparse._SubParsersAction[OneLineParser]") -> None:
    p = subparsers.add_parser("models", help="build and locate locally built models")
    sub = p.add_subparsers(dest="models_command", required=True, parser_class=OneLineParser)
    build = sub.add_parser("build-default", help="build the default model (once; cached)")
    build.add_argument(
        "--cache-dir", help="cache directory (default: $AMORTIZED_CACHE_DIR or the XDG cache)"
    )
    build.add_argument("--force", action="store_true", help="rebuild even if present")
    build.set_defaults(handler=_build_default)
    path = sub.add_parser("path", help="print where the default model lives")
    path.add_argument("--cache-dir")
    path.set_defaults(handler=_default_path)
    tiny = sub.add_parser("build-tiny", help="build a random tiny model (tests, demos)")
    tiny.add_argument("out", help="folder to write")
    tiny.add_argument("--architecture", choices=["llama", "qwen2"], default="llama")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(handler=_build_tiny)


def _build_default(args: argparse.Namespace) -> int:
    from amortized.models.default import default_model_path, ensure_default_model

    if args.force:
        shutil.rmtree(default_model_path(args.cache_dir), ignore_errors=True)
    print(ensure_default_model(args.cache_dir).path)
    return 0


def _default_path(args: argparse.Namespace) -> int:
    from amortized.models.default import default_model_path

    print(default_model_path(args.cache_dir))
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
    from amortized.serving.kv_prediction.cli import add_kvp_command

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
