# entromix: two commands do all the set-up.
#   make run   create .venv if missing, install the locked dependencies, run the DVC pipeline
#   make test  same environment, run the test suite (make test-fast: the quick part; make lint: ruff)
# Both are idempotent: the environment is (re)installed only when the lock file or
# pyproject.toml change. --no-compile, then scripts/compile_bytecode.py: the installed packages'
# bytecode compiled once on every core (20-35 s) rather than by pip one file at a time; with
# PYTHONDONTWRITEBYTECODE=1 set, as on the CI machines, Python would otherwise compile torch from
# source in every stage and dvc process (8-10 s each).
#
# Which PyTorch build (prints the build and its size after installing):
#   make run              requirements.lock: PyPI's torch (CUDA 13 build, runs on CPU too; 5.1 GB with
#                         its CUDA runtime packages)
#   make run TORCH=cpu    requirements-cpu.lock: PyTorch's CPU-only wheels (no CUDA packages) from
#                         download.pytorch.org (untested here: the build machines cannot reach it)
# Switching TORCH recreates .venv. Every target below works without activating .venv: the stages
# call `python`, and PATH here starts with .venv/bin.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= default
ifeq ($(TORCH),default)
LOCK   := requirements.lock
else ifeq ($(TORCH),cpu)
LOCK   := requirements-cpu.lock
else
$(error TORCH=$(TORCH) is not a build: use TORCH=cpu (CPU-only PyTorch) or leave TORCH unset (the default))
endif
STAMP  := $(VENV)/.entromix-installed-$(TORCH)
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run repro exp metrics-diff compare review exp-show plots test test-fast lint format install lock bench stability figures results clean-env

install: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml
	@for other in $(VENV)/.entromix-installed-*; do \
	  if [ -e "$$other" ] && [ "$$other" != "$(STAMP)" ]; then \
	    echo "make: TORCH=$(TORCH) differs from the build in $(VENV): recreating it"; rm -rf $(VENV); break; fi; done
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@$(BIN)/python scripts/compile_bytecode.py
	@$(BIN)/python scripts/torch_build.py
	@touch $(STAMP)

# The DVC pipeline: run and repro are the same (`make repro ARGS="train"` for one stage and its
# upstream); exp, metrics-diff and plots wrap the DVC commands a review uses.
run: $(STAMP)
	$(BIN)/dvc repro $(ARGS)

repro: run

# One DVC experiment, optionally from a named recipe in profiles/ plus any -S overrides:
#   make exp PROFILE=reference-gpu ARGS="-S train.pretrained_weights=/path/resnet50-0676ba61.pth"
#   make exp ARGS="-S curriculum.jsd_start=0.05"
exp: $(STAMP)
	@set -e; profile_args=""; \
	if [ -n "$(PROFILE)" ]; then profile_args=$$($(BIN)/python -m entromix.common.profiles profiles/$(PROFILE).yaml); fi; \
	echo "dvc exp run $$profile_args $(ARGS)"; $(BIN)/dvc exp run $$profile_args $(ARGS)

# Every changed metric: the workspace against HEAD, or ARGS="main my-experiment" (two revisions).
metrics-diff: $(STAMP)
	$(BIN)/dvc metrics diff $(ARGS)

# Is the diff beyond noise? Paired tests on the test images' predictions (docs/reviewing.md, "How to review a
# change"): HEAD against the workspace, or ARGS="main HEAD", ARGS="exp-a exp-b", or seed pairs
# ARGS="paired-real-only-n10-s{seed} paired-capped-n10-s{seed} --seeds 0-7"; --json for the JSON.
compare: $(STAMP)
	$(BIN)/entromix compare $(ARGS)

# Is the change a finding, or a seed's? The change (ARGS, dvc's -S) and the workspace's params as the baseline,
# each at SEEDS seeds (train.seed and score.seed), as DVC experiments run JOBS at a time, then compared seed by
# seed (docs/reviewing.md):  make review ARGS="-S curriculum.jsd_start=0.05" SEEDS=5 JOBS=2
SEEDS ?= 3
JOBS  ?= 1
review: $(STAMP)
	$(BIN)/entromix review $(ARGS) --seeds $(SEEDS) --jobs $(JOBS)

# dvc exp show cut to a review's columns: the params that differ between the rows, test ROC-AUC, sensitivity
# and specificity at the tuned threshold, threshold, Brier, synthetic admitted. ARGS="-A" for every commit,
# ARGS="--filter review-" for some experiments.
exp-show: $(STAMP)
	$(BIN)/entromix exp-show $(ARGS)

# The pipeline's plots as one HTML page (dvc_plots/index.html); ARGS="main" to overlay a revision.
plots: $(STAMP)
	@if [ -n "$(ARGS)" ]; then $(BIN)/dvc plots diff $(ARGS); else $(BIN)/dvc plots show; fi

# pytest exits 5 when it collects no tests: treat that as a failure, not a pass.
# The tests run on pytest-xdist workers, one per core (TEST_WORKERS=auto; tests/conftest.py gives each
# worker its share of the threads). --dist loadfile keeps each test file on one worker, in order:
# a file's module fixtures are built once and the end-to-end tests build on each other.
# TEST_WORKERS=0 runs them in this process, in file order.
TEST_WORKERS ?= auto
PYTEST_XDIST = -n $(TEST_WORKERS) --dist loadfile
test: $(STAMP)
	@$(BIN)/python -m pytest $(PYTEST_XDIST) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# Everything but the tests marked slow (those that train a network for more than one epoch or run
# the real DVC pipeline): under a minute, for the edit-test loop.
test-fast: $(STAMP)
	@$(BIN)/python -m pytest -m "not slow" -q $(PYTEST_XDIST) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-fast: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# ruff, configured in pyproject.toml: `make lint` checks (CI runs it), `make format` rewrites.
LINTED := src pipeline scripts tests benchmarks
lint: $(STAMP)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/ruff check $(LINTED)

format: $(STAMP)
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_score.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_compare.py
	$(BIN)/python benchmarks/bench_memory.py

# How much do the demo's results depend on the CPU, the thread count and the seed? Reruns the whole
# pipeline 8 times (oneDNN AVX2 / AVX512_CORE x 1 / 2 threads x seeds 0, 1) in scratch copies of the
# working tree, about 25 min on 2 cores; ARGS="--seeds 0-3 -S key=value ..." for other runs or data.
# Writes results/stability/demo/stability.json and .md (BENCHMARKS.md, "Stability").
stability: $(STAMP)
	$(BIN)/python benchmarks/bench_stability.py --out results/stability/demo/stability.json $(ARGS)

# Copy the pipeline's figures (DVC outputs, not in git) to docs/figures/ and regenerate the
# README's results section from the metrics files.
figures: $(STAMP)
	mkdir -p docs/figures
	cp plots/score/jsd_distribution.png plots/evaluate/figures/*.png docs/figures/
	$(BIN)/python scripts/readme_results.py

# Regenerate RESULTS.md, docs/figures/results_*.png and results/summary.csv from the DVC experiment
# exports in results/ (written by entromix sweep; see RESULTS.md for the commands).
results: $(STAMP)
	$(BIN)/entromix results

# Re-pin requirements.lock from the ranges in pyproject.toml (needs network access to PyPI).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" -e ".[test,export,timm]"
	.lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^entromix' > requirements.lock.new
	@echo "review requirements.lock.new (add the Linux x86_64 markers to the CUDA packages), move it over"
	@echo "requirements.lock, then run: python scripts/cpu_lock.py (derives requirements-cpu.lock)"
	rm -rf .lock-venv

clean-env:
	rm -rf $(VENV)
