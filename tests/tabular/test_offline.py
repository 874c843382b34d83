"""The estimator on an in-process vLLM ``LLM`` (no server), in a subprocess because vLLM's
CPU engine is spawned and needs a ``__main__`` guard."""

import json
import subprocess
import sys
import textwrap

import pytest

from amortized.models import ModelFolder

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from sklearn.datasets import load_iris
    from vllm import LLM
    from amortized.llm.vllm_local import OfflineLLMBackend
    from amortized.tabular.estimator import LLMTabularClassifier

    if __name__ == "__main__":
        llm = LLM(model=sys.argv[1], enforce_eager=True, max_model_len=2048,
                  kv_cache_memory_bytes=256 * 2**20, block_size=32)
        X, y = load_iris(return_X_y=True)
        model = LLMTabularClassifier(shots=8, rows_per_prompt=5, seeds=(40, 41),
                                     guided="regex", backend=OfflineLLMBackend(llm))
        result = model.fit(X[::5], y[::5]).predict_detailed(X[1:13])
        print("RESULT", json.dumps({"labels": [int(v) for v in result.labels],
                          "provenance": [p.value for p in result.provenance],
                          "prompts": result.usage.prompts}))
    """
)


@pytest.mark.slow
def test_estimator_on_an_in_process_llm(tiny_llama: ModelFolder, tmp_path) -> None:
    script = tmp_path / "offline.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tiny_llama.path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))

    assert len(result["labels"]) == 12
    assert set(result["labels"]) <= {0, 1, 2}
    assert result["provenance"] == ["parsed"] * 12
    assert result["prompts"] == 3 * 2
