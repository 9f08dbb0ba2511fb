# Two commands do all the set-up on a fresh clone: `make run` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
PARAMS ?= 20e6

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: the CPU build on this machine's disk, never a CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	# Other Lions, only so the benchmark can compare against them (their deps are already here).
	$(PIP) install -q --no-deps timm==1.0.31 lion-pytorch==0.2.5
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/optforge bench step --params $(PARAMS)

test: $(STAMP) lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
