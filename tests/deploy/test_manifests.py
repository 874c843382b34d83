"""deploy/: every file parses, names what the code defines, and passes what can be checked here.

No Docker engine, cluster or Helm exists where this runs, so: YAML (duplicate keys are
errors), Kubernetes objects against the JSON schemas bundled with ``kubernetes-validate``,
KubeRay objects by structure, images against the Dockerfiles, environment variables against
the code, and every command line against amortized's own parser (vLLM's parser in the one
``slow`` test).
"""

import argparse
import contextlib
import io
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from functools import cache
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

import amortized
from amortized.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKER = DEPLOY / "docker"
README = DEPLOY / "README.md"
HELM_VALUES = DEPLOY / "helm" / "production-stack-values.yaml"
SRC = REPO / "src" / "amortized"
YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
DOCKERFILES = sorted(p for p in DOCKER.glob("Dockerfile.*") if p.suffix != ".dockerignore")
SERVER_VARIANTS = ("cpu", "gpu")
PORT = 8000
K8S_MIN_VERSION = "1.29"
PLUGIN_GROUP = "vllm.endpoint_plugins"
IMAGE = re.compile(r"^(?:(?P<registry>[\w.:-]+(?:/[\w.-]+)*)/)?amortized:(?P<tag>\S+)$")
NOT_CHECKED_ENV = {"PATH", "PYTHONUNBUFFERED"}
"""Environment variables that are neither amortized's, vLLM's nor Hugging Face's (pip's
``PIP_*`` options are build settings and are accepted by prefix)."""

# The chart (vllm/vllm-stack 0.1.12) renders these vllmConfig keys as `vllm serve` options,
# spelled as its template spells them.
CHART_VLLM_OPTIONS = {
    "maxModelLen": "--max-model-len",
    "tensorParallelSize": "--tensor-parallel-size",
    "dtype": "--dtype",
    "maxNumSeqs": "--max-num-seqs",
    "gpuMemoryUtilization": "--gpu_memory_utilization",
}


# --- loading ---------------------------------------------------------------------------------


def _reject_duplicate_keys(node: yaml.Node | None, path: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                line = key.start_mark.line + 1
                assert key.value not in seen, f"{path}:{line}: duplicate key {key.value!r}"
                seen.add(key.value)
            _reject_duplicate_keys(value, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _reject_duplicate_keys(item, path)


@cache
def load_yaml(path: Path) -> tuple[Any, ...]:
    """Every non-empty document of ``path``; a duplicate key (YAML keeps the last) fails."""
    text = path.read_text()
    for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
        _reject_duplicate_keys(node, path)
    return tuple(doc for doc in yaml.safe_load_all(text) if doc is not None)


def k8s_objects(folder: Path = DEPLOY) -> list[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object (a mapping with apiVersion and kind) under ``folder``."""
    return [
        (path, doc)
        for path in YAML_FILES
        if path.is_relative_to(folder)
        for doc in load_yaml(path)
        if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc
    ]


def objects_of_kind(kind: str, folder: Path = DEPLOY) -> list[dict[str, Any]]:
    return [obj for _, obj in k8s_objects(folder) if obj["kind"] == kind]


def is_core_api(api_version: str) -> bool:
    """Built-in API groups (core, apps, batch, *.k8s.io), not custom resources like ray.io."""
    group = api_version.rpartition("/")[0]
    return group == "" or "." not in group or group.endswith(".k8s.io")


def pod_specs(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The pod specs inside an object: a Pod's, a Deployment's template, RayCluster groups."""
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind == "Pod":
        yield spec
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        yield spec["template"]["spec"]
    elif kind == "RayCluster":
        yield spec["headGroupSpec"]["template"]["spec"]
        for group in spec.get("workerGroupSpecs", []):
            yield group["template"]["spec"]


def containers(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for pod in pod_specs(obj):
        yield from pod.get("initContainers", [])
        yield from pod.get("containers", [])


def helm_model_specs() -> list[dict[str, Any]]:
    (values,) = load_yaml(HELM_VALUES)
    specs: list[dict[str, Any]] = values["servingEngineSpec"]["modelSpec"]
    return specs


def readme_commands() -> list[list[str]]:
    """Each command line of the README's ```bash blocks, split like a shell would."""
    commands, in_block, pending = [], False, ""
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_block = line.strip() == "```bash"
            continue
        if not in_block or not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        commands.append(shlex.split(pending + line))
        pending = ""
    return commands


DOCKER_RUN_VALUE_OPTIONS = {"-p", "-v", "-e", "--gpus", "--shm-size", "--name", "--entrypoint"}


def docker_run_image_index(command: list[str]) -> int:
    """Where the image stands in ``docker run [OPTIONS] IMAGE [ARGS]``."""
    i = 2
    while command[i].startswith("-"):
        takes_value = command[i] in DOCKER_RUN_VALUE_OPTIONS
        i += 2 if takes_value else 1
    return i


def readme_images() -> list[str]:
    """Every image the README's docker, kind and kubectl commands name."""
    images = []
    for command in readme_commands():
        if command[:2] == ["docker", "build"]:
            images.append(command[command.index("-t") + 1])
        elif command[:2] == ["docker", "run"]:
            images.append(command[docker_run_image_index(command)])
        elif command[:2] in (["docker", "tag"], ["docker", "push"]):
            images += command[2:]
        elif command[:3] == ["kind", "load", "docker-image"]:
            images += command[3:]
        elif command[:3] == ["kubectl", "set", "image"]:
            images += [t.partition("=")[2] for t in command[4:] if "=" in t]
    return images


# --- Dockerfiles -----------------------------------------------------------------------------


@cache
def dockerfile(path: Path) -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, rest = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, f"{path}: ends inside a continued line"
    return tuple(instructions)


def instruction_args(path: Path, keyword: str) -> list[str]:
    return [rest for key, rest in dockerfile(path) if key == keyword]


def dockerfile_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in instruction_args(path, "ENV"):
        for token in shlex.split(rest):
            name, sep, value = token.partition("=")
            assert sep, f"{path}: write ENV as NAME=value, not {token!r}"
            env[name] = value
    return env


def dockerfile_base_image(path: Path) -> str:
    """The final stage's FROM image with global ARG defaults substituted."""
    args: dict[str, str] = {}
    base = ""
    for key, rest in dockerfile(path):
        if key == "ARG" and not base:
            name, _, default = rest.partition("=")
            args[name] = default
        elif key == "FROM":
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
    return base


def json_form(path: Path, keyword: str) -> list[str]:
    (rest,) = instruction_args(path, keyword)
    value = json.loads(rest)  # exec form: signals reach the server, no shell in between
    assert isinstance(value, list), f"{path}: {keyword} must be a JSON array"
    return [str(v) for v in value]


def variant(path: Path) -> str:
    return path.name.removeprefix("Dockerfile.")


def dockerignore_includes(ignore_file: Path, relative: str) -> bool:
    """Whether Docker sends ``relative`` with the build context (last matching rule wins)."""

    def regex(pattern: str) -> re.Pattern[str]:
        parts = re.split(r"(\*\*/|\*|\?)", pattern.strip("/"))
        table = {"**/": "(?:.*/)?", "*": "[^/]*", "?": "[^/]"}
        return re.compile("".join(table.get(p, re.escape(p)) for p in parts))

    prefixes = ["/".join(relative.split("/")[: i + 1]) for i in range(relative.count("/") + 1)]
    included = True
    for line in ignore_file.read_text().splitlines():
        rule = line.strip()
        if not rule or rule.startswith("#"):
            continue
        negated = rule.startswith("!")
        if any(regex(rule.lstrip("!")).fullmatch(p) for p in prefixes):
            included = negated
    return included


# --- the code's own names and parsers --------------------------------------------------------


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def extras() -> dict[str, list[str]]:
    found: dict[str, list[str]] = pyproject()["project"]["optional-dependencies"]
    return found


def plugin_names() -> set[str]:
    names = {ep.name for ep in metadata.entry_points(group=PLUGIN_GROUP)}
    assert names, f"no {PLUGIN_GROUP} entry point installed: pip install -e ."
    return names


@cache
def package_sources(package: str) -> str | None:
    """All Python source of an installed package, without importing it; None if absent."""
    if package == "amortized":
        root = SRC
    else:
        spec = find_spec(package)
        if spec is None or spec.origin is None:
            return None
        root = Path(spec.origin).parent
    return "\n".join(p.read_text(errors="replace") for p in sorted(root.rglob("*.py")))


@cache
def amortized_parser() -> argparse.ArgumentParser:
    return build_parser()


def parse_amortized(argv: list[str], where: str) -> tuple[argparse.Namespace, list[str]]:
    """``amortized ARGV`` through the real parser, split at ``--`` like ``amortized.cli.main``."""
    head, passthrough = argv, []
    if "--" in argv:
        split = argv.index("--")
        head, passthrough = argv[:split], argv[split + 1 :]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = amortized_parser().parse_args(head)
    except SystemExit:
        pytest.fail(f"{where}: `amortized {shlex.join(argv)}` is rejected: {stderr.getvalue()}")
    assert not passthrough or args.command == "serve", f"{where}: `--` is only for serve"
    return args, passthrough


def tabular_has_engine_option() -> bool:
    """``--engine`` of ``amortized tabular predict`` (issue 8 adds it with the ray extra)."""
    subparsers = [
        a for a in amortized_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ]
    tabular = subparsers[0].choices["tabular"]
    predict = next(
        a for a in tabular._actions if isinstance(a, argparse._SubParsersAction)
    ).choices["predict"]
    return any("--engine" in a.option_strings for a in predict._actions)


def option_value(args: list[str], *names: str) -> str | None:
    """The last value of an option among vLLM arguments (``--x v`` or ``--x=v``)."""
    value = None
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(name + "="):
                value = arg.partition("=")[2]
    return value


def parallel_gpus(vllm_args: list[str]) -> int:
    tp = option_value(vllm_args, "--tensor-parallel-size", "-tp") or "1"
    pp = option_value(vllm_args, "--pipeline-parallel-size", "-pp") or "1"
    return int(tp) * int(pp)


def serve_argvs() -> list[tuple[str, list[str]]]:
    """Every ``amortized serve`` argv (after ``amortized``) that deploy/ starts."""
    found = []
    for path in DOCKERFILES:
        if variant(path) in SERVER_VARIANTS:
            entry = json_form(path, "ENTRYPOINT") + json_form(path, "CMD")
            found.append((path.name, entry[1:]))
    for path, obj in k8s_objects():
        for container in containers(obj):
            command = container.get("command", [])
            if command[:1] == ["amortized"]:
                found.append((f"{path.name}:{container['name']}", command[1:] + container["args"]))
    for command in readme_commands():
        if command[:2] == ["amortized", "serve"]:
            found.append(("README", command[1:]))
        elif command[:2] == ["docker", "run"]:
            at = docker_run_image_index(command)
            image_variant = command[at].rpartition("-")[2]
            entry = json_form(DOCKER / f"Dockerfile.{image_variant}", "ENTRYPOINT")
            found.append(("README docker run", entry[1:] + command[at + 1 :]))
    return found


def kv_transfer_configs() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(modelSpec, parsed --kv-transfer-config) for each Helm engine that sets one."""
    found = []
    for spec in helm_model_specs():
        extra_args = spec.get("vllmConfig", {}).get("extraArgs", [])
        raw = option_value(extra_args, "--kv-transfer-config")
        if raw is not None:
            found.append((spec, json.loads(raw)))
    return found


@pytest.fixture(scope="module")
def kubernetes_validate() -> Any:
    return pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate for the schema checks"
    )


def schema_errors(validator: Any, obj: dict[str, Any], where: str) -> list[str]:
    errors = []
    for version in (K8S_MIN_VERSION, validator.latest_version()):
        try:
            validator.validate(obj, version, strict=True)
        except validator.ValidationError as error:
            at = "/".join(str(p) for p in error.path)
            errors.append(f"{where} (Kubernetes {version}) at {at}: {error.message}")
    return errors


def as_pod(pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": pod_spec}


# --- tests -----------------------------------------------------------------------------------


def test_deploy_folder_has_what_the_readme_lists():
    for rel in re.findall(r"^\| `([\w./*-]+)` \|", README.read_text(), flags=re.MULTILINE):
        assert list(DEPLOY.glob(rel.rstrip("/"))), f"README lists deploy/{rel}: not there"
    assert {variant(p) for p in DOCKERFILES} >= set(SERVER_VARIANTS)
    assert YAML_FILES


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path):
    documents = load_yaml(path)
    assert documents, f"{path} holds no document"
    for doc in documents:
        assert isinstance(doc, dict), f"{path}: a document is a {type(doc).__name__}"


def test_kubernetes_objects_pass_the_schemas(kubernetes_validate: Any):
    """Built-in kinds whole; custom resources (KubeRay) through their pod templates."""
    errors, checked = [], 0
    for path, obj in k8s_objects():
        where = f"{path.relative_to(DEPLOY)} {obj['kind']}/{obj['metadata']['name']}"
        if is_core_api(obj["apiVersion"]):
            errors += schema_errors(kubernetes_validate, obj, where)
            checked += 1
        else:
            for pod in pod_specs(obj):
                errors += schema_errors(kubernetes_validate, as_pod(pod), f"{where} pod template")
    assert not errors, "\n".join(errors)
    assert checked >= 5


def test_helm_values_hold_valid_kubernetes_parts(kubernetes_validate: Any):
    """env, extraVolumes(Mounts) and security contexts go into the chart's pods verbatim."""
    (values,) = load_yaml(HELM_VALUES)
    engine = values["servingEngineSpec"]
    errors = []
    for spec in helm_model_specs():
        container = {
            "name": "vllm",
            "image": f"{spec['repository']}:{spec['tag']}",
            "env": spec.get("env", []),
            "volumeMounts": spec.get("extraVolumeMounts", []),
            "securityContext": engine.get("containerSecurityContext", {}),
        }
        pod = {
            "containers": [container],
            "volumes": spec.get("extraVolumes", []),
            "securityContext": engine.get("securityContext", {}),
        }
        errors += schema_errors(kubernetes_validate, as_pod(pod), f"modelSpec {spec['name']}")
        mounts = {m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"] for v in pod["volumes"]}
        assert mounts <= volumes, f"{spec['name']}: mounts {mounts - volumes} have no volume"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", spec["name"]), (
            f"modelSpec name {spec['name']!r} becomes part of Kubernetes names: use a-z0-9-"
        )
    assert not errors, "\n".join(errors)


def test_images_are_built_by_the_dockerfiles():
    version = amortized.__version__
    refs: list[tuple[str, str]] = []
    for path, obj in k8s_objects():
        refs += [(path.name, c["image"]) for c in containers(obj)]
    refs += [("helm values", f"{s['repository']}:{s['tag']}") for s in helm_model_specs()]
    refs += [("README", image) for image in readme_images()]
    checked = 0
    for where, ref in refs:
        match = IMAGE.match(ref)
        assert match, f"{where}: {ref} is not an amortized image (amortized:{version}-VARIANT)"
        image_version, _, image_variant = match["tag"].rpartition("-")
        assert image_version == version, f"{where}: {ref} is not version {version}"
        assert (DOCKER / f"Dockerfile.{image_variant}").is_file(), (
            f"{where}: no Dockerfile for {ref}"
        )
        checked += 1
    assert checked >= 8
    for spec in helm_model_specs():
        assert spec["tag"].endswith("-gpu"), "the production-stack chart runs CUDA engines"


def test_readme_builds_each_image_from_its_own_dockerfile():
    builds = {}
    for command in readme_commands():
        if command[:2] == ["docker", "build"]:
            dockerfile_path = REPO / command[command.index("-f") + 1]
            tag = command[command.index("-t") + 1]
            assert dockerfile_path.is_file(), f"docker build -f {dockerfile_path}: no such file"
            assert command[-1] == ".", "build from the repository root (COPY src, pyproject.toml)"
            assert tag == f"amortized:{amortized.__version__}-{variant(dockerfile_path)}", tag
            builds[variant(dockerfile_path)] = tag
    assert set(builds) == {variant(p) for p in DOCKERFILES}, "every Dockerfile needs a build line"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile(path: Path):
    ignore = path.with_name(path.name + ".dockerignore")
    assert ignore.is_file(), f"{ignore.name} keeps .venv/ and .git/ out of the build context"
    for private in (".venv/bin/python", ".git/HEAD"):
        assert not dockerignore_includes(ignore, private), f"{ignore.name} sends {private}"
    for rest in instruction_args(path, "COPY"):
        if "--from=" in rest:
            continue
        *sources, _ = [t for t in shlex.split(rest) if not t.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), f"{path.name}: COPY {source}: not in the repository"
            assert dockerignore_includes(ignore, source), f"{ignore.name} excludes {source}"
    for rest in instruction_args(path, "RUN"):
        for extra in re.findall(r"\.\[([\w,]+)\]", rest):
            for name in extra.split(","):
                if name == "ray" and "ray" not in extras():
                    continue  # issue 8 adds the ray extra; pip only warns until then
                assert name in extras(), f"{path.name}: pyproject has no [{name}] extra"
    users = instruction_args(path, "USER")
    assert users, f"{path.name}: set a non-root USER"
    assert users[-1].split(":")[0] not in ("root", "0"), f"{path.name}: runs as root"

    base = dockerfile_base_image(path)
    python = SpecifierSet(pyproject()["project"]["requires-python"])
    if variant(path) == "gpu":
        (vllm,) = [Requirement(r) for r in extras()["gpu"] if Requirement(r).name == "vllm"]
        image, _, tag = base.partition(":")
        assert image == "vllm/vllm-openai", base
        assert vllm.specifier.contains(tag.removeprefix("v")), f"{base} is outside {vllm}"
    elif variant(path) == "cpu":
        version = re.fullmatch(r"python:(\d+\.\d+)-slim.*", base)
        assert version, f"{path.name}: base {base} is not a slim Python image"
        assert python.contains(version[1]), f"{base}: amortized needs Python {python}"
    elif variant(path) == "ray":
        version = re.fullmatch(r"rayproject/ray:([\d.]+)-py(\d)(\d+)(-cpu)?", base)
        assert version, f"{path.name}: base {base} is not a rayproject/ray image"
        assert python.contains(f"{version[2]}.{version[3]}"), f"{base}: needs Python {python}"


@pytest.mark.parametrize("name", SERVER_VARIANTS)
def test_server_image_starts_amortized_serve(name: str):
    path = DOCKER / f"Dockerfile.{name}"
    entry = json_form(path, "ENTRYPOINT")
    assert entry[:2] == ["amortized", "serve"], entry
    args, _ = parse_amortized(entry[1:] + json_form(path, "CMD"), path.name)
    assert args.command == "serve"
    assert args.host == "0.0.0.0", "listen on every interface, or nothing outside reaches it"
    assert str(args.port) in " ".join(instruction_args(path, "EXPOSE")).split()
    (healthcheck,) = instruction_args(path, "HEALTHCHECK")
    assert f"127.0.0.1:{args.port}/health" in healthcheck, "probe vLLM's /health on our port"
    env = dockerfile_env(path)
    assert plugin_names() <= set(env["VLLM_PLUGINS"].split(",")), "the routes would not load"
    assert "VOLUME" in dict(dockerfile(path))
    assert env["AMORTIZED_CACHE_DIR"] in " ".join(instruction_args(path, "VOLUME"))


def test_environment_variables_exist_in_the_code():
    names: list[tuple[str, str, str | None]] = []  # (where, name, value)
    for path in DOCKERFILES:
        names += [(path.name, k, v) for k, v in dockerfile_env(path).items()]
    for path, obj in k8s_objects():
        for container in containers(obj):
            names += [(path.name, e["name"], e.get("value")) for e in container.get("env", [])]
    for spec in helm_model_specs():
        names += [("helm values", e["name"], e.get("value")) for e in spec.get("env", [])]
    owners = {"AMORTIZED_": "amortized", "VLLM_": "vllm", "HF_": "huggingface_hub"}
    for where, name, value in names:
        owner = next((pkg for prefix, pkg in owners.items() if name.startswith(prefix)), None)
        if owner is None:
            assert name in NOT_CHECKED_ENV or name.startswith("PIP_"), (
                f"{where}: what reads {name}?"
            )
            continue
        source = package_sources(owner)
        if source is None:
            continue  # vllm is an optional extra
        assert f'"{name}"' in source, f"{where}: {owner} never reads {name}"
        if name == "VLLM_PLUGINS" and value is not None:
            assert plugin_names() <= set(value.split(",")), f"{where}: VLLM_PLUGINS={value}"
        if name == "AMORTIZED_CAPABILITIES" and value is not None:
            from amortized.serving.capabilities import enabled_capabilities

            assert enabled_capabilities(selection=value), f"{where}: {name}={value}"
    assert any(name == "VLLM_PLUGINS" and where == "helm values" for where, name, _ in names)


def test_every_amortized_command_parses():
    argvs = serve_argvs()
    for path, obj in k8s_objects():
        if obj["kind"] == "RayJob":
            argvs.append((path.name, shlex.split(obj["spec"]["entrypoint"])[1:]))
    argvs += [("README", c[1:]) for c in readme_commands() if c[:1] == ["amortized"]]
    assert len(argvs) >= 8
    for where, argv in argvs:
        if "--engine" in argv and not tabular_has_engine_option():
            continue  # checked by test_rayjob_runs_the_tabular_batch_job once --engine exists
        parse_amortized(argv, where)


def test_kubernetes_servers_listen_where_service_and_probes_look():
    services = objects_of_kind("Service", DEPLOY / "kubernetes")
    deployments = objects_of_kind("Deployment", DEPLOY / "kubernetes")
    assert services
    assert deployments
    for deployment in deployments:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), "the Deployment does not select its pods"
        (server,) = deployment["spec"]["template"]["spec"]["containers"]
        args, vllm_args = parse_amortized(server["command"][1:] + server["args"], "deployment")
        ports = {p["name"]: p["containerPort"] for p in server["ports"]}
        assert args.port in ports.values()
        assert args.host == "0.0.0.0"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = server[probe]["httpGet"]
            assert not get["path"].startswith("/v1"), f"{probe}: --api-key guards /v1 paths"
            assert ports.get(get["port"], get["port"]) == args.port, f"{probe} misses the port"
        for service in services:
            assert service["spec"]["selector"].items() <= labels.items(), "Service selects nothing"
            for port in service["spec"]["ports"]:
                assert ports.get(port["targetPort"], port["targetPort"]) == args.port
        gpus = server["resources"].get("limits", {}).get("nvidia.com/gpu")
        if gpus is not None or server["image"].endswith("-gpu"):
            assert gpus is not None, "the GPU variant needs an nvidia.com/gpu limit"
            assert int(gpus) == parallel_gpus(vllm_args), (
                f"nvidia.com/gpu {gpus} != tensor x pipeline parallel size"
            )
            mounts = {m["mountPath"] for m in server["volumeMounts"]}
            assert "/dev/shm" in mounts, "tensor parallelism needs shared memory"


def test_volume_claims_are_defined():
    claims = {obj["metadata"]["name"] for obj in objects_of_kind("PersistentVolumeClaim")}
    volumes = [v for _, o in k8s_objects() for pod in pod_specs(o) for v in pod.get("volumes", [])]
    volumes += [v for spec in helm_model_specs() for v in spec.get("extraVolumes", [])]
    used = {
        v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v
    }
    assert used, "no PVC is used"
    assert used <= claims, f"no PersistentVolumeClaim named {sorted(used - claims)} in deploy/"


def test_helm_values_select_the_kv_prediction_connector():
    from amortized.kv_prediction.policy import (
        CONNECTOR_MODULE,
        CONNECTOR_NAME,
        connector_extra_config,
    )

    configs = kv_transfer_configs()
    assert configs, "the values pass no --kv-transfer-config"
    for spec, config in configs:
        extra = connector_extra_config(config)
        assert extra is not None, f"kv_connector is not {CONNECTOR_NAME}"
        assert config["kv_connector_module_path"] == CONNECTOR_MODULE
        assert config["kv_role"] == "kv_both"
        predictor = Path(extra["predictor"])
        mounts = {Path(m["mountPath"]): m for m in spec["extraVolumeMounts"]}
        mount = next((m for p, m in mounts.items() if predictor.is_relative_to(p)), None)
        assert mount is not None, f"predictor {predictor} is on no mounted volume"
        volumes = {v["name"] for v in spec["extraVolumes"]}
        assert mount["name"] in volumes
        tp = spec["vllmConfig"].get("tensorParallelSize", 1)
        pp = int(option_value(spec["vllmConfig"]["extraArgs"], "--pipeline-parallel-size") or 1)
        assert int(spec["requestGPU"]) == tp * pp, "requestGPU != tensor x pipeline parallel size"


def test_raycluster_is_well_formed():
    (cluster,) = objects_of_kind("RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    ray_version = dockerfile_base_image(DOCKER / "Dockerfile.ray").split(":")[1].split("-")[0]
    assert spec["rayVersion"] == ray_version, "rayVersion must match the image's Ray"
    assert spec["headGroupSpec"]["template"]["spec"]["containers"]
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"]
        assert group["template"]["spec"]["containers"]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group
    for container in containers(cluster):
        assert IMAGE.match(container["image"]), container["image"]
        assert container["image"].endswith("-ray"), "Ray pods run the Dockerfile.ray image"


def test_rayjob_runs_the_tabular_batch_job():
    (job,) = objects_of_kind("RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    clusters = {c["metadata"]["name"]: c for c in objects_of_kind("RayCluster")}
    cluster = clusters[spec["clusterSelector"]["ray.io/cluster"]]
    argv = shlex.split(spec["entrypoint"])
    assert argv[0] == "amortized"
    if not tabular_has_engine_option():
        pytest.skip("`amortized tabular predict --engine` is not there yet (issue 8)")
    args, _ = parse_amortized(argv[1:], "rayjob entrypoint")
    assert (args.command, args.tabular_command, args.engine) == ("tabular", "predict", "ray")
    services = {s["metadata"]["name"]: s for s in objects_of_kind("Service")}
    base_urls = args.base_url if isinstance(args.base_url, list) else [args.base_url]
    assert base_urls, "the job must name the server (--base-url)"
    for base_url in base_urls:
        url = urlsplit(base_url)
        assert url.hostname in services, f"--base-url {base_url}: no Service {url.hostname}"
        assert url.port in {p["port"] for p in services[url.hostname]["spec"]["ports"]}
        assert url.path == "/v1"
    (head,) = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    mounts = [Path(m["mountPath"]) for m in head["volumeMounts"]]
    for path in (args.train, args.test, args.out):
        assert any(path.is_relative_to(m) for m in mounts), f"{path} is on no volume of the head"


def test_readme_names_existing_objects():
    (values,) = load_yaml(HELM_VALUES)
    names = {(o["kind"].lower(), o["metadata"]["name"]) for _, o in k8s_objects()}
    helm_repos, releases = {}, []
    for command in readme_commands():
        if command[:3] == ["helm", "repo", "add"]:
            helm_repos[command[3]] = command[4]
        elif command[:2] == ["helm", "install"]:
            releases.append(command[2])
            assert command[3].split("/")[0] in helm_repos, f"{command[3]}: repo not added"
            if "-f" in command:
                assert (REPO / command[command.index("-f") + 1]).is_file()
        elif command[:1] == ["kubectl"]:
            for i, token in enumerate(command):
                if token == "-f":
                    assert (REPO / command[i + 1]).is_file(), f"kubectl -f {command[i + 1]}"
                kind, _, name = token.partition("/")
                if kind in ("deployment", "rayjob", "pod") and name:
                    assert (kind, name) in names, f"README: no {token} in deploy/"
    assert releases
    models = [s["name"] for s in values["servingEngineSpec"]["modelSpec"]]
    services = {name for kind, name in names if kind == "service"}
    services |= {f"{r}-router-service" for r in releases}
    services |= {f"{r}-{m}-engine-service" for r in releases for m in models}
    text = README.read_text() + HELM_VALUES.read_text()
    for name in set(re.findall(r"\b[\w-]+-(?:router|engine)-service\b", text)) | {
        token.partition("/")[2]
        for command in readme_commands()
        for token in command
        if token.startswith("service/")
    }:
        assert name in services, f"{name} is not a Service that deploy/ or the chart creates"


@pytest.mark.slow
def test_vllm_accepts_every_option():
    """vLLM's own parser (as ``amortized serve`` runs it) on every option list deploy/ passes."""
    pytest.importorskip("vllm", reason="vLLM is an optional extra")
    from amortized.errors import AmortizedError
    from amortized.serving.kv_prediction.connector import ConnectorSettings
    from amortized.serving.launcher import parse_vllm_args

    argvs = []
    for where, argv in serve_argvs():
        args, passthrough = parse_amortized(argv, where)
        argvs.append((where, ["serve", args.model or "default-model", *passthrough]))
    for spec in helm_model_specs():
        config = dict(spec.get("vllmConfig", {}))
        argv = ["serve", spec["modelURL"], "--host", "0.0.0.0", "--port", str(PORT)]
        if "enablePrefixCaching" in config:
            flag = config.pop("enablePrefixCaching")
            argv.append("--enable-prefix-caching" if flag else "--no-enable-prefix-caching")
        extra_args = config.pop("extraArgs", [])
        for key, value in config.items():
            assert key in CHART_VLLM_OPTIONS, f"teach this test how the chart renders {key}"
            argv += [CHART_VLLM_OPTIONS[key], str(value)]
        argvs.append((f"helm {spec['name']}", argv + extra_args))
    for where, argv in argvs:
        try:
            parse_vllm_args(argv)
        except AmortizedError as error:
            pytest.fail(f"{where}: {shlex.join(argv)}: {error}")
    for _, config in kv_transfer_configs():
        ConnectorSettings.parse(config["kv_connector_extra_config"])
