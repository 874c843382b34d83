"""The AMX permission request that keeps vLLM's CPU kernels from dying of SIGILL."""

import importlib.metadata
import platform

import pytest

from amortized.serving.cpu_features import has_amx, request_amx_permission


def test_registered_for_every_vllm_process() -> None:
    values = [e.value for e in importlib.metadata.entry_points(group="vllm.general_plugins")]
    assert "amortized.serving.cpu_features:register" in values


def test_permission_is_granted_where_the_cpu_has_amx() -> None:
    if platform.machine() != "x86_64" or not has_amx():
        assert request_amx_permission() is False
        pytest.skip("no AMX on this CPU: nothing to request")
    assert request_amx_permission() is True
    assert request_amx_permission() is True  # asking again is harmless
