# Every target maps to one CLI command (`python -m orchestrator ...` or
# `python -m analysis ...`); `make help` lists them. Targets install what they
# need into .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch on a fresh CPU machine; on a GPU machine set
# TORCH_SPEC to the CUDA build you want (or to "" to keep an installed one).
# Where pip's index offers only the CUDA wheel of torch==2.13.0 (stock PyPI on
# Linux), add PyTorch's CPU index to skip the multi-GB CUDA libraries:
#   make install TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu' 
# TORCH_VERSION is the torch that the [gpu] extra's vLLM pins (pyproject.toml).
TORCH_VERSION := 2.13.0
TORCH_SPEC ?= torch==$(TORCH_VERSION)
# install-gpu: PyPI's Linux wheel of this torch is the CUDA 13.0 build.
GPU_TORCH_SPEC ?= torch==$(TORCH_VERSION)
# Written by install-gpu: the torch under vLLM's compiled ops. Every later pip
# install here runs under it, so none can swap that torch.
TORCH_PIN := $(VENV)/torch-pin.txt
CONFIG ?= experiments/demo.yaml
ARGS ?=
RESULTS ?= runs/demo/results.csv
FIT_OUT ?= $(dir $(RESULTS))analysis
POINTS ?= ../shared/data/chinchilla_epoch/svg_extracted_data.csv
# Epoch AI's Chinchilla replication drops the 5 highest-loss points; keep their protocol
# for their data, and every point of anyone else's.
FIT2D_ARGS ?= $(if $(findstring chinchilla_epoch,$(POINTS)),--drop-highest-loss 5,)

export RAY_USAGE_STATS_ENABLED ?= 0
export MLFLOW_DISABLE_TELEMETRY ?= true
export PYTHONUNBUFFERED ?= 1

.DEFAULT_GOAL := help
.PHONY: help install install-gpu sweep plan show grade ui gc verify power suggest throughput-prior fit fit-2d docs test test-fast faults bench gpu-check lint clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if [ -f $(TORCH_PIN) ]; then \
	    echo "GPU venv: keeping $$(cat $(TORCH_PIN)) and the [gpu] extra"; \
	    $(PY) -m pip install -q -c $(TORCH_PIN) -e ".[dev,gpu]"; \
	else \
	    if [ -n "$(TORCH_SPEC)" ]; then $(PY) -m pip install -q $(TORCH_SPEC); fi; \
	    $(PY) -m pip install -q -e ".[dev]"; \
	fi
	touch $@

# torch first (the CUDA build), then the project with the [gpu] extra under a
# constraint that holds torch where it is: a vLLM that wanted another torch
# fails to resolve instead of replacing it.
$(VENV)/.installed-gpu: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if [ ! -f $(TORCH_PIN) ]; then $(PY) -m pip install -q $(GPU_TORCH_SPEC); fi
	@$(PY) -c 'import sys, torch; sys.exit(0 if torch.version.cuda else \
	    "install-gpu: $(VENV) has torch " + torch.__version__ + ", a CPU build, and vLLM needs " \
	    "the CUDA one: make clean && make install-gpu (or set GPU_TORCH_SPEC)")'
	$(PY) -c 'import importlib.metadata as m; print("torch==" + m.version("torch"))' > $(TORCH_PIN)
	$(PY) -m pip install -q -c $(TORCH_PIN) -e ".[dev,gpu]"
	touch $(VENV)/.installed $@

install: $(VENV)/.installed ## create .venv and install the project (+ dev extra)

install-gpu: $(VENV)/.installed-gpu ## .venv with the pinned GPU stack (vLLM, CUDA torch; NVIDIA driver >= 580)

sweep: install ## run a sweep: make sweep [CONFIG=experiments/demo.yaml] [ARGS='grid.seeds=[0,1]']
	$(PY) -m orchestrator sweep $(CONFIG) $(ARGS)

plan: install ## print a config's stage plan without running it
	$(PY) -m orchestrator plan $(CONFIG) $(ARGS)

show: install ## print a few records of a stage artifact: make show CONFIG=... ARGS='--stage rollouts --n 1000 --seed 0'
	$(PY) -m orchestrator show $(CONFIG) $(ARGS)

grade: install ## grade a JSONL of completions: make grade FILE=x.jsonl TASK=gsm8k OUT=graded.jsonl
	$(PY) -m orchestrator grade $(FILE) --task $(or $(TASK),gsm8k) --out $(or $(OUT),graded.jsonl)

ui: install ## MLflow UI on 127.0.0.1 over a sweep's store
	$(PY) -m orchestrator ui $(CONFIG) $(ARGS)

verify: install ## check an artifact store (every finished stage whole): make verify STORE=runs/demo
	$(PY) -m orchestrator verify $(or $(STORE),runs/demo) $(ARGS)

gc: install ## list artifacts no kept config uses: make gc KEEP='experiments/demo.yaml runs/demo_full' [ARGS=--delete]
	$(PY) -m orchestrator gc --keep $(or $(KEEP),$(CONFIG)) $(ARGS)

power: install ## can CONFIG's grid tell k = 2 from 1? make power CONFIG=... PILOT=runs/pilot/results.csv
	$(PY) -m orchestrator power $(CONFIG) --pilot $(or $(PILOT),$(RESULTS)) $(ARGS)

suggest: install ## the next cells for a multiplier's CI: make suggest RESULTS=... GROUP=rft_self
	$(PY) -m analysis suggest $(RESULTS) --group $(or $(GROUP),rft_self) $(ARGS)

throughput-prior: install ## rewrite the ETA's shipped prior from a finished demo: make throughput-prior STORE=runs/demo/artifacts
	$(PY) -c "import sys; from pathlib import Path; from orchestrator.estimate import write_prior; \
	print(write_prior(Path(sys.argv[1])), 'stages ->', 'orchestrator/throughput_prior.json')" \
	$(or $(STORE),runs/demo/artifacts)

fit: install ## fit scaling laws: make fit RESULTS=runs/demo/results.csv
	$(PY) -m analysis fit $(RESULTS) --baseline sft_teacher --out $(FIT_OUT)

fit-2d: install ## fit L(N, D) = E + A/N^a + B/D^b on a model-size x data-size table
	$(PY) -m analysis fit-2d $(POINTS) --out $(or $(OUT),runs/fit_2d) $(FIT2D_ARGS)

docs: install ## regenerate docs/config.md from the config dataclasses
	$(PY) -m orchestrator config-docs > docs/config.md

test: install ## run the whole test suite (what CI runs)
	$(PY) -m pytest

test-fast: install ## the suite without the slow end-to-end tests
	$(PY) -m pytest -m "not slow and not gpu"

faults: install ## the injected-fault tests of docs/reliability.md (bad configs, hostile outputs, secrets, exposure)
	$(PY) -m pytest tests/faults

bench: install ## ratio benchmarks (speed and memory against an in-run baseline)
	$(PY) -m benchmarks

# A GPU machine may reach no package registry: use .venv when there is one, else the
# python that has vLLM installed (PYTHON=...); the repo itself needs no install.
gpu-check: ## the GPU path measured on one GPU, < 8 min, no hub or registry (vLLM installed)
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m benchmarks.gpu_check

lint: install ## ruff
	$(PY) -m ruff check .

clean: ## remove the venv and caches (keeps runs/)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
