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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import httpx

from amortized.config import BUILT_DEFAULT_MODEL_NAME, DEFAULT_HOST, DEFAULT_PORT
from amortized.errors import AmortizedError
from amortized.models.folder import validate_model_folder
from amortized.serving.process import log_tail

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
    provenance: Mapping[str, Any] | None = None
    """A fetched model's provenance record (kind, licence, served dtype), if any."""

    @property
    def served_name(self) -> str:
        """The name clients use: ``--served-model-name`` if given, else the model."""
        names = self.vllm_args
        for index, arg in enumerate(names):
            if arg == "--served-model-name" and index + 1 < len(names):
                return names[index + 1]
            if arg.startswith("--served-model-name="):
                return arg.split("=", 1)[1]
        return self.model

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


def _option_value(args: Sequence[str], *names: str) -> str | None:
    """The last value given for any of ``names`` (``--name value`` or ``--name=value``)."""
    value = None
    for index, arg in enumerate(args):
        for name in names:
            if arg == name and index + 1 < len(args):
                value = args[index + 1]
            elif arg.startswith(name + "="):
                value = arg.split("=", 1)[1]
    return value


def _parallel_size(args: Sequence[str], *names: str) -> int:
    value = _option_value(args, *names)
    try:
        return 1 if value is None else int(value)
    except ValueError:
        raise AmortizedError(f"{names[0]} takes a whole number, not {value!r}") from None


@dataclass(frozen=True)
class ResolvedModel:
    """What vLLM loads, the name it is served under by default, and its provenance."""

    model: str
    served_name: str | None = None
    provenance: Mapping[str, Any] | None = None


def resolve_model(
    model: str | None, cache_dir: str | None, say: Callable[[str], None] | None = None
) -> ResolvedModel:
    """A model name (fetched or built if needed), a local folder (validated) or a hub id.

    No model means the default real model, SmolLM2-135M-Instruct.
    """
    from amortized.models.pretrained import (
        DEFAULT_SERVED_MODEL,
        PRETRAINED_MODELS,
        fetch_pretrained,
        known_model_names,
        read_provenance,
    )

    name = DEFAULT_SERVED_MODEL if model is None else model
    if name in PRETRAINED_MODELS and not Path(name).exists():
        folder = fetch_pretrained(name, cache_dir, say=say).path.resolve()
        return ResolvedModel(str(folder), name, read_provenance(folder))
    if name == BUILT_DEFAULT_MODEL_NAME and not Path(name).exists():
        from amortized.models.default import ensure_default_model  # loads torch

        built = ensure_default_model(cache_dir, log=say).path.resolve()
        return ResolvedModel(str(built), name)
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        folder_path = validate_model_folder(path).path.resolve()
        return ResolvedModel(str(folder_path), None, read_provenance(folder_path))
    if HUB_ID.match(name):
        return ResolvedModel(name)
    raise AmortizedError(
        f"unknown model {name!r}: not a folder, and not one of the names "
        f"{', '.join(known_model_names())} (or a hub id such as org/name)"
    )


COMPACT_JSON = json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})


def structured_output_defaults(vllm_args: Sequence[str]) -> list[str]:
    """Compact guided JSON unless the user configures structured outputs.

    vLLM's grammars allow any whitespace between JSON tokens by default, and only as a
    server setting (vLLM 0.32 ignores the per-request field); real small models then pad
    answers with newlines until ``max_tokens`` cuts them off (SmolLM2 did on the tabular
    route, docs/models.md). Compact JSON is still JSON. The setting needs a named backend:
    xgrammar, the one vLLM's ``auto`` picks first.
    """
    if any(a.startswith("--structured-outputs-config") for a in vllm_args):
        return []
    return ["--structured-outputs-config", COMPACT_JSON]


def model_defaults(resolved: ResolvedModel, vllm_args: Sequence[str]) -> list[str]:
    """Options a fetched model's provenance asks for, unless the user set them.

    The served name is the model's name; the dtype is the one measured to keep its answers
    (docs/models.md); a tools-aware chat template, identical to the model's own for
    requests without tools, lets vLLM's tool parser work.
    """
    args: list[str] = []
    if resolved.served_name and not _has_option(vllm_args, "--served-model-name"):
        args += ["--served-model-name", resolved.served_name]
    provenance = resolved.provenance or {}
    dtype = provenance.get("served_dtype")
    if isinstance(dtype, str) and not _has_option(vllm_args, "--dtype"):
        args += ["--dtype", dtype]
    template = provenance.get("tool_chat_template")
    if isinstance(template, str) and not _has_option(vllm_args, "--chat-template"):
        args += ["--chat-template", str(Path(resolved.model) / template)]
    return args


def plugin_allowlist(environ: Mapping[str, str]) -> str:
    """``VLLM_PLUGINS`` with amortized added, keeping every general plugin vLLM would load."""
    current = environ.get("VLLM_PLUGINS")
    if current is None:
        names = sorted({ep.name for ep in metadata.entry_points(group="vllm.general_plugins")})
    else:
        names = [n for n in current.split(",") if n]
    from amortized.serving.plugin import PLUGIN_NAME

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
    from amortized.kv_prediction.config import check_fits_base, load_predictor_folder
    from amortized.kv_prediction.placement import check_single_rank
    from amortized.kv_prediction.policy import CONNECTOR_MODULE, CONNECTOR_NAME

    if _has_option(vllm_args, "--kv-transfer-config"):
        raise AmortizedError(
            "--kv-predictor writes --kv-transfer-config itself; drop one of the two"
        )
    if options.min_prompt_tokens is not None and options.min_prompt_tokens < 2:
        raise AmortizedError("--kv-prediction-min-tokens must be at least 2")
    check_single_rank(
        _parallel_size(vllm_args, "--tensor-parallel-size", "-tp"),
        _parallel_size(vllm_args, "--pipeline-parallel-size", "-pp"),
    )
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
    say: Callable[[str], None] | None = None,
    allowed_llm_urls: Sequence[str] = (),
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
    from amortized.serving.capabilities import enabled_capabilities

    enabled_capabilities()  # fail now on a bad AMORTIZED_CAPABILITIES
    resolved_model = resolve_model(model, cache_dir, say)
    resolved = resolved_model.model
    if on_cpu is None:
        from vllm.platforms import current_platform

        on_cpu = bool(current_platform.is_cpu())
    args = list(vllm_args)
    warnings: list[str] = []
    if kv_prediction is not None:
        extra_args, warnings = kv_prediction_args(kv_prediction, resolved, args)
        args += extra_args
    args += model_defaults(resolved_model, args)
    args += structured_output_defaults(args)
    if on_cpu:
        args += cpu_defaults(args, environ)
    env = {"VLLM_PLUGINS": plugin_allowlist(environ)}
    if allowed_llm_urls:
        from amortized.serving.outbound import ALLOWED_LLM_URLS_ENV
        from amortized.serving.outbound import allowed_llm_urls as parse

        urls = [*parse(environ), *allowed_llm_urls]
        env[ALLOWED_LLM_URLS_ENV] = ",".join(parse({ALLOWED_LLM_URLS_ENV: ",".join(urls)}))
    if on_cpu and "VLLM_CPU_OMP_THREADS_BIND" not in environ and (os.cpu_count() or 1) <= 2:
        env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"  # auto-binding reserves a core we lack
    preload = intel_openmp_preload(environ) if on_cpu else None
    if preload:
        env["LD_PRELOAD"] = preload
    return LaunchPlan(
        resolved, host, port, tuple(args), env, tuple(warnings), resolved_model.provenance
    )


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


EXAMPLE_QUESTION = "What is the capital of France?"
EXAMPLE_PROMPT = "The capital of France is"


def usage_examples(base_url: str, model: str, api_key: str | None, chat: bool = True) -> str:
    """A curl and an openai-python command that work against this server, as printed text.

    Greedy (temperature 0), so the printed commands give the answer the docs show; base
    models get a text completion instead of a chat.
    """
    auth = f" -H {shlex.quote('Authorization: Bearer ' + api_key)}" if api_key else ""
    ask: dict[str, Any]
    if chat:
        route = "chat/completions"
        ask = {"messages": [{"role": "user", "content": EXAMPLE_QUESTION}]}
        call = f"chat.completions.create(model={model!r}, messages=[{{'role': 'user', "
        call += f"'content': {EXAMPLE_QUESTION!r}}}], max_tokens=32, temperature=0)"
        answer = "reply.choices[0].message.content"
    else:
        route, ask = "completions", {"prompt": EXAMPLE_PROMPT}
        call = f"completions.create(model={model!r}, prompt={EXAMPLE_PROMPT!r}, "
        call += "max_tokens=32, temperature=0)"
        answer = "reply.choices[0].text"
    body = json.dumps({"model": model, **ask, "max_tokens": 32, "temperature": 0})
    python = (
        "from openai import OpenAI; "
        f"client = OpenAI(base_url={base_url!r}, api_key={(api_key or 'EMPTY')!r}); "
        f"reply = client.{call}; print({answer})"
    )
    return "\n".join(
        [
            f"curl -s {base_url}/{route} -H 'Content-Type: application/json'{auth} "
            f"-d {shlex.quote(body)}",
            f"{shlex.quote(sys.executable)} -c {_double_quoted(python)}",
            f"curl -s {base_url}/amortized/info{auth}",
        ]
    )


@dataclass
class ServeConsole:
    """What ``amortized serve`` shows its user, apart from the engine's own output.

    ``log_path`` is where the engine's output goes (None: to the console, ``--verbose``).
    """

    out: TextIO
    err: TextIO
    log_path: Path | None = None

    def say(self, message: str) -> None:
        """One progress line on the user's terminal."""
        print(f"amortized: {message}", file=self.err, flush=True)

    def engine_error(self, summary: str) -> AmortizedError:
        """A one-line error for a failed start, pointing at the engine log's last error."""
        if self.log_path is None:
            return AmortizedError(summary)
        lines = log_tail(self.log_path, 200).splitlines()
        cause = next(
            (line.strip() for line in reversed(lines) if "Error" in line and ":" in line), ""
        )
        cause = f"; last error in the log: {cause[-300:]}" if cause else ""
        return AmortizedError(f"{summary}{cause} (engine log: {self.log_path})")


def default_log_path(cache_dir: str | None, port: int) -> Path:
    """``<cache>/logs/serve-<time>-<port>.log``: one file per start, never overwritten."""
    from amortized.config import cache_dir as resolve_cache_dir

    stamp = time.strftime("%Y%m%d-%H%M%S")
    return resolve_cache_dir(cache_dir) / "logs" / f"serve-{stamp}-{port}.log"


@contextmanager
def engine_output_to(log_path: Path | None) -> Iterator[ServeConsole]:
    """Send everything written to this process's stdout/stderr (vLLM's logs, warnings, the
    engine processes it spawns) to ``log_path``; the console keeps the user's terminal.

    With ``log_path=None`` nothing is redirected (``--verbose``).
    """
    if log_path is None:
        yield ServeConsole(sys.stdout, sys.stderr)
        return
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        raise AmortizedError(
            f"cannot write the engine log {log_path} ({exc.strerror or exc}); pass "
            "--log-file PATH somewhere writable, or --verbose to keep it on the console"
        ) from exc
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    out = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    err = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    try:
        yield ServeConsole(out, err, log_path)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        out.close()
        err.close()


def _announce_when_ready(
    plan: LaunchPlan,
    model: str,
    api_key: str | None,
    console: ServeConsole,
    stopped: threading.Event,
) -> None:
    """Poll ``/health``; print the examples once it answers (nothing once ``stopped``)."""
    client_host = "127.0.0.1" if plan.host in ("0.0.0.0", "", "::") else plan.host
    root = f"http://{client_host}:{plan.port}"
    started = time.monotonic()
    ticking = console.log_path is not None and console.err.isatty()
    while not stopped.wait(0.5):
        try:
            if httpx.get(f"{root}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if ticking:
            elapsed = time.monotonic() - started
            _write(console.err, f"\ramortized: starting the engine... {elapsed:.0f} s")
    else:
        _write(console.err, "\n" if ticking else "")
        return
    chat = (plan.provenance or {}).get("kind") != "base"
    examples = usage_examples(f"{root}/v1", model, api_key, chat)
    took = time.monotonic() - started
    _write(console.err, "\n" if ticking else "")
    _write(
        console.out,
        f"\namortized: serving {model!r} at {root}/v1 (ready in {took:.0f} s). Try:\n"
        f"{examples}\n\n",
    )


def _write(stream: TextIO, text: str) -> None:
    """Write and flush, quietly doing nothing once the console is closed (shutdown)."""
    try:
        stream.write(text)
        stream.flush()
    except (ValueError, OSError):
        pass


def run(plan: LaunchPlan, console: ServeConsole | None = None) -> None:
    """Start vLLM in this process with ``plan``; returns when the server stops.

    Callers check the port first (``check_port_free``) so a clash fails before any model
    is built; vLLM's own bind error is the backstop.
    """
    console = console or ServeConsole(sys.stdout, sys.stderr)
    os.environ.update(plan.env)
    args = parse_vllm_args(plan.argv)
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    from vllm.logger import configure_logging_from_args

    model_name = plan.served_name
    keys = args.api_key or [os.environ.get("VLLM_API_KEY") or ""]
    stopped = threading.Event()
    banner = threading.Thread(
        target=_announce_when_ready,
        name="amortized-ready-banner",
        daemon=True,
        args=(plan, model_name, keys[0] or None, console, stopped),
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
        raise console.engine_error(f"vLLM failed: {type(exc).__name__}: {exc}") from exc
    finally:
        stopped.set()
        if banner.is_alive():
            banner.join(timeout=3)
