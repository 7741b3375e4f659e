# Two commands do all the set-up: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INDEX_DIR ?= data/index
CATALOG ?= data/demo/catalog.csv
STAMP := $(VENV)/.installed

.PHONY: run run-offline test lint format index clean reliability audit quality bench bench-quick
.PHONY: train-garments

# TORCH_INDEX=https://download.pytorch.org/whl/cpu installs the CPU build of torch
# (a few hundred MB instead of the CUDA build's gigabytes); the Dockerfile does the same.
TORCH_INDEX ?=
export TORCH_INDEX PYTHON

# scripts/install.sh is the install recipe the Dockerfile runs too.
$(STAMP): pyproject.toml scripts/install.sh
	sh scripts/install.sh $(VENV) -e '.[dev]'
	touch $(STAMP)

$(INDEX_DIR)/CURRENT: | $(STAMP)
	$(PY) index_builder.py build $(CATALOG) --out $(INDEX_DIR)

index: $(STAMP)
	$(PY) index_builder.py build $(CATALOG) --out $(INDEX_DIR)

run: $(STAMP) $(INDEX_DIR)/CURRENT
	$(PY) -m bot

# Offline smoke run: a tiny random-init model (no downloadable weights needed).
# Results are meaningless; it proves the whole path works on an air-gapped machine.
OFFLINE_ENV := FASHIONBOT_MODEL__NAME=data/models/tiny-random.json \
	FASHIONBOT_MODEL__PRETRAINED=data/models/tiny-random.pt \
	FASHIONBOT_INDEX__DIR=data/index-offline
run-offline: $(STAMP)
	$(PY) -m engine.devmodel data/models
	test -f data/index-offline/CURRENT || $(OFFLINE_ENV) $(PY) index_builder.py build $(CATALOG)
	$(OFFLINE_ENV) $(PY) -m bot

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

# docs/benchmarks.md, docs/scaling.md + bench/results.json (FAISS and scikit-learn as
# references). Rerun some sections only: make bench BENCH_ARGS="--only ann,startup".
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m bench.perf $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m bench.perf --quick $(BENCH_ARGS)

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

# Known-vulnerability audit of the installed packages (needs access to a vulnerability DB).
audit: $(STAMP)
	$(PY) -m pip install --quiet pip-audit
	$(VENV)/bin/pip-audit

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(INDEX_DIR) data/index-offline data/models .pytest_cache
