# sagemaker-rl-local: everything starts from here. `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SMRL   := $(BIN)/smrl-local

# Extra flags: make local-train TRAIN_ARGS="--steps 5000", make local-serve SERVE_ARGS="--port 9000"
TRAIN_ARGS ?=
SERVE_ARGS ?=
PREFLIGHT_ARGS ?=
PYTEST_ARGS ?=

.PHONY: help venv check engine images images-gpu local-train local-serve preflight test bench clean

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

images: engine  ## build the CPU training and inference images (seconds when nothing changed)
	$(SMRL) build --image all

local-train: images  ## train CartPole DQN in local mode, print the rewards, write reward_curve.png
	$(SMRL) train --no-build $(TRAIN_ARGS)

local-serve: images  ## serve the newest trained model on 127.0.0.1, drive CartPole with it, serve until Ctrl-C
	$(SMRL) serve $(SERVE_ARGS)

preflight: images  ## pre-flight of the example cloud job presets/cartpole_job.py (all checks, about a minute)
	$(SMRL) preflight presets/cartpole_job.py $(PREFLIGHT_ARGS)

check: venv  ## the quick loop, no Docker and no images: ruff, mypy, unit tests (about 25 s)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest tests -m "not integration" -q $(PYTEST_ARGS)

test: check images  ## `make check`, then the integration tests against the real Docker engine (no benchmarks)
	$(BIN)/pytest --benchmark-skip -m integration $(PYTEST_ARGS)

images-gpu: engine  ## build the GPU (CUDA 11) training image: about 4 GB, not part of `make images`
	$(SMRL) build --variant gpu

bench: images  ## benchmarks of the images and local mode; table in the terminal and benchmarks/report.md
	$(BIN)/pytest --benchmark-only $(PYTEST_ARGS)

clean:  ## remove the virtualenv, build caches and training output (images stay)
	rm -rf $(VENV) .smrl output
