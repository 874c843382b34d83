"""``amortized serve``: a thin launcher around ``vllm serve``.

It resolves the model (building the default one when none is given), sets the plugin
environment and CPU-friendly defaults, checks what commonly goes wrong before vLLM spends
its start-up time, then runs vLLM's own ``serve`` command in this process. Every vLLM
option after ``--`` is passed through unchanged and overrides our defaults.
"""

import json
import os
import re
import shlex
import socket
import sys
import threading
import time
from argparse import Namespace
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import httpx

from amortized.errors import AmortizedError
from amortized.models.folder import validate_model_folder
from amortized.serving.capabilities import enabled_capabilities
from amortized.serving.plugin import PLUGIN_NAME

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
CPU_KV_CACHE_BYTES = "1G"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class LaunchPlan:
    """Everything needed to start vLLM: the argv after ``vllm``, and environment updates."""

    model: str
    host: str
    port: int
    vllm_args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def argv(self) -> list[str]:
        """``serve MODEL --host H --port P ...``, as ``vllm`` takes it."""
        return ["serve", self.model, "--host", self.host, "--port", str(self.port), *self.vllm_args]

    def shell_command(self) -> str:
        """The equivalent plain ``vllm serve`` command line, for docs and --dry-run."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return f"{env} vllm {shlex.join(self.argv)}".strip()


def _has_option(args: Sequence[str], *names: str) -> bool:
    return any(a == n or a.startswith(n + "=") for a in args for n in names)


def resolve_model(model: str | None, cache_dir: str | None) -> tuple[str, bool]:
    """A local folder (validated), a hub id (passed on), or the default model (built if needed).

    Returns the model and whether it is the default one.
    """
    if model is None:
        from amortized.models.default import ensure_default_model  # loads torch

        return str(ensure_default_model(cache_dir).path), True
    path = Path(model).expanduser()
    looks_like_path = path.exists() or model.startswith((".", "/", "~")) or not HUB_ID.match(model)
    if looks_like_path:
        return str(validate_model_folder(path).path.resolve()), False
    return model, False


def plugin_allowlist(environ: Mapping[str, str]) -> str:
    """``VLLM_PLUGINS`` with amortized added, keeping every general plugin vLLM would load."""
    current = environ.get("VLLM_PLUGINS")
    if current is None:
        names = sorted({ep.name for ep in metadata.entry_points(group="vllm.general_plugins")})
    else:
        names = [n for n in current.split(",") if n]
    return ",".join(dict.fromkeys([*names, PLUGIN_NAME]))


def cpu_defaults(vllm_args: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """Defaults that make a 2-core CPU machine start fast and stay within memory."""
    defaults: list[str] = []
    if not _has_option(
        vllm_args, "--enforce-eager", "--no-enforce-eager", "-O", "--compilation-config"
    ):
        defaults.append("--enforce-eager")  # torch.compile costs ~45 s at each start
    if not _has_option(vllm_args, "--kv-cache-memory-bytes") and not environ.get(
        "VLLM_CPU_KVCACHE_SPACE"
    ):
        defaults += ["--kv-cache-memory-bytes", CPU_KV_CACHE_BYTES]
    return defaults


def intel_openmp_preload(environ: Mapping[str, str]) -> str | None:
    """``LD_PRELOAD`` with vllm-cpu's Intel OpenMP in front, or None when already there.

    vLLM's CPU guide asks for it and its worker warns that speculative decoding is much
    slower without it (on a 2-core machine the gain was within run-to-run noise). The
    engine processes vLLM spawns inherit it; the API server process does not need it.
    """
    current = environ.get("LD_PRELOAD", "")
    library = Path(sys.prefix) / "lib" / "libiomp5.so"
    if "libiomp5" in current or not library.is_file():
        return None
    return f"{library}:{current}" if current else str(library)


@dataclass(frozen=True)
class KVPredictionOptions:
    """``--kv-predictor DIR`` and its companions."""

    predictor: str
    min_prompt_tokens: int | None = None
    default_on: bool = True


def kv_prediction_args(
    options: KVPredictionOptions, model: str, vllm_args: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The ``--kv-transfer-config`` that selects the connector, and warnings to print.

    The predictor is checked against the served model here so a mismatch costs no start-up.
    """
    from amortized.serving.kv_prediction.config import check_fits_base, load_predictor_folder
    from amortized.serving.kv_prediction.policy import CONNECTOR_MODULE, CONNECTOR_NAME

    if _has_option(vllm_args, "--kv-transfer-config"):
        raise AmortizedError(
            "--kv-predictor writes --kv-transfer-config itself; drop one of the two"
        )
    if options.min_prompt_tokens is not None and options.min_prompt_tokens < 2:
        raise AmortizedError("--kv-prediction-min-tokens must be at least 2")
    folder = load_predictor_folder(options.predictor)
    warnings = check_fits_base(folder, model) if Path(model).is_dir() else []
    extra: dict[str, object] = {
        "predictor": str(folder.path),
        "default": "on" if options.default_on else "off",
    }
    if options.min_prompt_tokens is not None:
        extra["min_prompt_tokens"] = options.min_prompt_tokens
    config = {
        "kv_connector": CONNECTOR_NAME,
        "kv_connector_module_path": CONNECTOR_MODULE,
        "kv_role": "kv_both",
        "kv_connector_extra_config": extra,
    }
    return ["--kv-transfer-config", json.dumps(config, separators=(",", ":"))], warnings


def plan_launch(
    model: str | None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    vllm_args: Sequence[str] = (),
    cache_dir: str | None = None,
    on_cpu: bool | None = None,
    environ: Mapping[str, str] | None = None,
    kv_prediction: KVPredictionOptions | None = None,
) -> LaunchPlan:
    """Work out the vLLM command and environment; raises AmortizedError on bad input.

    ``on_cpu=None`` asks vLLM which platform this is, after the cheap checks passed.
    """
    environ = os.environ if environ is None else environ
    for option in ("--host", "--port"):
        if _has_option(vllm_args, option):
            raise AmortizedError(
                f"pass {option} before `--` (amortized serve {option} ...), "
                "not among the vLLM options"
            )
    if not 0 < port < 65536:
        raise AmortizedError(f"--port {port} is not a TCP port; use 1-65535")
    enabled_capabilities()  # fail now on a bad AMORTIZED_CAPABILITIES
    resolved, is_default = resolve_model(model, cache_dir)
    if on_cpu is None:
        from vllm.platforms import current_platform

        on_cpu = bool(current_platform.is_cpu())
    args = list(vllm_args)
    warnings: list[str] = []
    if kv_prediction is not None:
        extra_args, warnings = kv_prediction_args(kv_prediction, resolved, args)
        args += extra_args
    if is_default and not _has_option(args, "--served-model-name"):
        from amortized.models.default import DEFAULT_MODEL_NAME

        args += ["--served-model-name", DEFAULT_MODEL_NAME]
    if on_cpu:
        args += cpu_defaults(args, environ)
    env = {"VLLM_PLUGINS": plugin_allowlist(environ)}
    if on_cpu and "VLLM_CPU_OMP_THREADS_BIND" not in environ and (os.cpu_count() or 1) <= 2:
        env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"  # auto-binding reserves a core we lack
    preload = intel_openmp_preload(environ) if on_cpu else None
    if preload:
        env["LD_PRELOAD"] = preload
    return LaunchPlan(resolved, host, port, tuple(args), env, tuple(warnings))


def check_port_free(host: str, port: int) -> None:
    """Fail fast, before vLLM loads anything, when another process listens on the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise AmortizedError(
                f"cannot listen on {host}:{port} ({exc.strerror}); stop the other server "
                "or pass --port N"
            ) from exc


def parse_vllm_args(argv: Sequence[str]) -> Namespace:
    """Parse ``argv`` with vLLM's own serve parser, turning its errors into one line."""
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    def fail(message: str) -> None:
        raise AmortizedError(f"vLLM rejected its options: {message} (see `vllm serve --help`)")

    parser = FlexibleArgumentParser(prog="vllm")  # type: ignore[no-untyped-call]
    subparsers = parser.add_subparsers(dest="subparser")
    serve_parser = ServeSubcommand().subparser_init(subparsers)
    for p in (parser, serve_parser):
        p.error = fail  # type: ignore[method-assign,assignment]
    args: Namespace = parser.parse_args(list(argv))
    return args


def _double_quoted(code: str) -> str:
    """Quote for POSIX shells with double quotes when safe: easier to read than shlex."""
    return f'"{code}"' if not set(code) & set('"$`\\!') else shlex.quote(code)


def usage_examples(base_url: str, model: str, api_key: str | None) -> str:
    """A curl and an openai-python command that work against this server, as printed text."""
    auth = f" -H {shlex.quote('Authorization: Bearer ' + api_key)}" if api_key else ""
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 32}
    )
    python = (
        "from openai import OpenAI; "
        f"client = OpenAI(base_url={base_url!r}, api_key={(api_key or 'EMPTY')!r}); "
        f"reply = client.chat.completions.create(model={model!r}, "
        "messages=[{'role': 'user', 'content': 'Hello'}], max_tokens=32); "
        "print(reply.choices[0].message.content)"
    )
    return "\n".join(
        [
            f"curl -s {base_url}/chat/completions -H 'Content-Type: application/json'{auth} "
            f"-d {shlex.quote(body)}",
            f"{shlex.quote(sys.executable)} -c {_double_quoted(python)}",
            f"curl -s {base_url}/amortized/info{auth}",
        ]
    )


def _announce_when_ready(host: str, port: int, model: str, api_key: str | None) -> None:
    client_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    root = f"http://{client_host}:{port}"
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{root}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        return
    examples = usage_examples(f"{root}/v1", model, api_key)
    print(f"\namortized: serving {model!r} at {root}/v1. Try:\n{examples}\n", flush=True)


def run(plan: LaunchPlan) -> None:
    """Start vLLM in this process with ``plan``; returns when the server stops.

    Callers check the port first (``check_port_free``) so a clash fails before any model
    is built; vLLM's own bind error is the backstop.
    """
    os.environ.update(plan.env)
    args = parse_vllm_args(plan.argv)
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    from vllm.logger import configure_logging_from_args

    model_name = (args.served_model_name or [plan.model])[0]
    keys = args.api_key or [os.environ.get("VLLM_API_KEY") or ""]
    banner = threading.Thread(
        target=_announce_when_ready,
        name="amortized-ready-banner",
        daemon=True,
        args=(plan.host, plan.port, model_name, keys[0] or None),
    )
    try:
        cli_env_setup()  # type: ignore[no-untyped-call]
        configure_logging_from_args(args)
        ServeSubcommand().validate(args)
        banner.start()
        ServeSubcommand.cmd(args)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        raise AmortizedError(f"vLLM failed: {type(exc).__name__}: {exc}") from exc
