# sagemaker-rl-local: everything starts from here. `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SMRL   := $(BIN)/smrl-local

# Pass extra flags to `smrl-local train`, e.g. make local-train TRAIN_ARGS="--steps 5000"
TRAIN_ARGS ?=
PYTEST_ARGS ?=

.PHONY: help venv engine images local-train test clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/.installed  ## create the virtualenv with the host package and test tools

engine: venv  ## check the Docker engine + compose; on Debian/Ubuntu as root, install and start them
	$(BIN)/python -m emulator.engine ensure

images: engine  ## build the CPU training image (seconds when nothing changed)
	$(SMRL) build

local-train: images  ## train CartPole DQN in local mode, print the rewards, write reward_curve.png
	$(SMRL) train --no-build $(TRAIN_ARGS)

test: images  ## unit tests + integration tests against the real Docker engine (no benchmarks)
	$(BIN)/pytest $(PYTEST_ARGS)

clean:  ## remove the virtualenv, build caches and training output (images stay)
	rm -rf $(VENV) .smrl output
