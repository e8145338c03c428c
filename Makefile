# The front door. `make run` and `make test` are all a fresh clone needs.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch, pinned; GPU users: make setup TORCH_SPEC="torch==2.13.0" TORCH_INDEX=...
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: setup run test test-fast smoke bench clean help

help:
	@echo "make run     create .venv, install, run the default experiment (ARGS='...' adds overrides)"
	@echo "make test    install if needed, run the whole test suite"
	@echo "make test-fast  the suite without the tests marked slow (wheel build, launcher sweeps)"
	@echo "make smoke   the CI smoke experiment (exit non-zero if the fit misses the truth)"
	@echo "make bench   every benchmark, CSVs under outputs/ (solver + Fig. 7, fit, forces, simulate, ...; see docs/benchmarks.md)"
	@echo "make clean   remove the venv, caches and run outputs"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# -q: a newcomer sees the run, not pip's progress; errors still print. The filter hides
# setuptools' note that every editable install of a flat layout prints ("Editable installation.").
$(STAMP): pyproject.toml | $(BIN)/python
	@echo "installing lagfit and its dependencies into $(VENV) (first time: a few minutes)"
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install -q -e ".[test,joblib,slurm]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/lagfit run $(ARGS)

smoke: $(STAMP)
	$(BIN)/lagfit run experiment=smoke $(ARGS)

# pytest-xdist: one worker per core, plus one where SLURM is installed: the tests on a real
# SLURM (run together by one worker: tests/conftest.py's scheduler) mostly wait on the cluster,
# and must not keep a core idle meanwhile. Bytecode caches on (some images set
# PYTHONDONTWRITEBYTECODE): pytest then keeps the test modules it rewrites, and a second run
# collects faster.
CORES := $(shell nproc 2>/dev/null || echo 2)
TEST_WORKERS ?= $(shell if command -v sbatch >/dev/null 2>&1; then echo $$(($(CORES) + 1)); else echo $(CORES); fi)
PYTEST := PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -n $(TEST_WORKERS)

test: $(STAMP)
	$(PYTEST) $(ARGS)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow" $(ARGS)

bench: $(STAMP)
	$(BIN)/lagfit run experiment=benchmark $(ARGS)
	$(BIN)/python bench/fit_bench.py --out outputs/fit_bench.csv
	$(BIN)/python bench/trajectory_bench.py --out outputs/trajectory_bench.csv
	$(BIN)/python bench/forces_bench.py --out outputs/forces_bench.csv
	$(BIN)/python bench/simulate_bench.py --out outputs/simulate_bench.csv
	$(BIN)/python bench/startup.py outputs/startup.csv
	$(BIN)/python bench/eiv_bench.py --out outputs/eiv_bench.csv

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find outputs -mindepth 1 ! -name .gitkeep -prune -exec rm -rf {} +
