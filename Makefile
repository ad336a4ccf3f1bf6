# Two commands set everything up on a fresh machine with Python 3.11 and make:
#   make demo   - create .venv if missing, install, run the end-to-end demo on simulated data (demo_out/)
#   make demo DATA=../shared/data   - the same pipeline on real source files and .h5ad data
#   make test   - same bootstrap, then the test suite
# Both are idempotent: the install step reruns only when setup.cfg or pyproject.toml change.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast install clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,vcc]'  # vcc: cell-eval, for the agreement tests
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m txpert_head.cli.demo $(if $(DATA),--data $(DATA),)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
