"""How ``amortized serve`` plans a vLLM launch (no engine started here)."""

import json
import shlex
import socket
from importlib import metadata

import pytest

from amortized.errors import AmortizedError
from amortized.serving.launcher import (
    check_port_free,
    cpu_defaults,
    intel_openmp_preload,
    plan_launch,
    plugin_allowlist,
    usage_examples,
)


def test_cpu_defaults_and_plugin_env(tiny_llama):
    plan = plan_launch(str(tiny_llama.path), port=8123, on_cpu=True, environ={})
    assert plan.argv[:6] == [
        "serve",
        str(tiny_llama.path.resolve()),
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
    ]
    assert "--enforce-eager" in plan.argv
    assert plan.argv[plan.argv.index("--kv-cache-memory-bytes") + 1] == "1G"
    assert "amortized" in plan.env["VLLM_PLUGINS"].split(",")
    assert "--served-model-name" not in plan.argv


def test_user_vllm_options_override_defaults(tiny_llama):
    args = ["--no-enforce-eager", "--kv-cache-memory-bytes", "2G"]
    plan = plan_launch(str(tiny_llama.path), vllm_args=args, on_cpu=True, environ={})
    assert "--enforce-eager" not in plan.argv
    assert plan.argv.count("--kv-cache-memory-bytes") == 1
    assert cpu_defaults([], {"VLLM_CPU_KVCACHE_SPACE": "4"}) == ["--enforce-eager"]
    gpu = plan_launch(str(tiny_llama.path), on_cpu=False, environ={})
    assert "--enforce-eager" not in gpu.argv


def test_intel_openmp_is_preloaded_once_on_cpu(tiny_llama):
    library = intel_openmp_preload({})
    assert library is not None  # vllm-cpu depends on intel-openmp
    assert library.endswith("libiomp5.so")
    plan = plan_launch(str(tiny_llama.path), on_cpu=True, environ={"LD_PRELOAD": "/x/tc.so"})
    assert plan.env["LD_PRELOAD"] == f"{library}:/x/tc.so"
    assert intel_openmp_preload({"LD_PRELOAD": library}) is None
    assert "LD_PRELOAD" not in plan_launch(str(tiny_llama.path), on_cpu=False, environ={}).env


def test_existing_plugin_allowlist_is_extended_not_replaced():
    assert plugin_allowlist({"VLLM_PLUGINS": "other"}) == "other,amortized"
    assert plugin_allowlist({"VLLM_PLUGINS": "amortized"}) == "amortized"
    names = plugin_allowlist({}).split(",")
    assert "amortized" in names  # endpoint and general plugin share the name
    general = {e.name for e in metadata.entry_points(group="vllm.general_plugins")}
    assert general <= set(names)  # nothing vLLM would load is dropped


def test_hub_ids_pass_through_but_bad_paths_do_not(tmp_path):
    plan = plan_launch("Qwen/Qwen2.5-0.5B-Instruct", on_cpu=True, environ={})
    assert plan.model == "Qwen/Qwen2.5-0.5B-Instruct"
    with pytest.raises(AmortizedError, match="does not exist"):
        plan_launch(str(tmp_path / "missing"), on_cpu=True, environ={})
    with pytest.raises(AmortizedError, match="does not exist"):
        plan_launch("./missing/model", on_cpu=True, environ={})


@pytest.mark.parametrize("args", [["--port", "9"], ["--host=0.0.0.0"]])
def test_host_and_port_belong_before_the_separator(tiny_llama, args):
    with pytest.raises(AmortizedError, match="before `--`"):
        plan_launch(str(tiny_llama.path), vllm_args=args, on_cpu=True, environ={})


def test_bad_port_and_capability_selection(tiny_llama, monkeypatch):
    with pytest.raises(AmortizedError, match="not a TCP port"):
        plan_launch(str(tiny_llama.path), port=70000, on_cpu=True, environ={})
    monkeypatch.setenv("AMORTIZED_CAPABILITIES", "nope")
    with pytest.raises(AmortizedError, match="unknown capabilities nope"):
        plan_launch(str(tiny_llama.path), on_cpu=True, environ={})


def test_port_in_use_is_reported():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(AmortizedError, match=f"cannot listen on 127.0.0.1:{port}"):
            check_port_free("127.0.0.1", port)


def test_dry_run_command_is_a_valid_shell_line(tiny_llama):
    plan = plan_launch(str(tiny_llama.path), on_cpu=True, environ={"VLLM_PLUGINS": "x"})
    words = shlex.split(plan.shell_command())
    assert "VLLM_PLUGINS=x,amortized" in words
    assert words[words.index("vllm") + 1] == "serve"


def test_usage_examples_carry_the_api_key_only_when_set():
    with_key = usage_examples("http://127.0.0.1:1/v1", "m", "sekret")
    assert with_key.count("Authorization: Bearer sekret") == 2
    assert "api_key='sekret'" in with_key
    assert "Authorization" not in usage_examples("http://127.0.0.1:1/v1", "m", None)


def test_guided_json_is_compact_unless_structured_outputs_are_configured(tiny_llama):
    plan = plan_launch(str(tiny_llama.path), on_cpu=True, environ={})
    config = plan.argv[plan.argv.index("--structured-outputs-config") + 1]
    assert json.loads(config) == {"backend": "xgrammar", "disable_any_whitespace": True}
    mine = ["--structured-outputs-config.backend", "guidance"]
    plan = plan_launch(str(tiny_llama.path), vllm_args=mine, on_cpu=True, environ={})
    assert not any(a == "--structured-outputs-config" for a in plan.argv)


def test_the_served_name_is_what_clients_use(tiny_llama):
    args = ["--served-model-name", "t"]
    plan = plan_launch(str(tiny_llama.path), vllm_args=args, on_cpu=True, environ={})
    assert plan.served_name == "t"
    args = ["--served-model-name=u"]
    plan = plan_launch(str(tiny_llama.path), vllm_args=args, on_cpu=True, environ={})
    assert plan.served_name == "u"
    assert plan_launch(str(tiny_llama.path), on_cpu=True, environ={}).served_name == plan.model
