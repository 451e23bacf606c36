# Quill's setup and everyday commands. Every target is idempotent: run it twice, nothing changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1

.PHONY: help setup system-deps up test lint format lock peers labelstudio clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml setup.py src/quill/models/_ctc_beam.c src/quill/_paper.c requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

system-deps:  ## Debian packages (browser, fonts, corpus) and npm fonts the project needs
	./scripts/install_fonts.sh

setup: system-deps $(BIN)/.installed  ## system packages first (the C compiler), then .venv with the locked dependencies

up: setup  ## the main job: web app + REST API with the shipped model on localhost
	$(BIN)/quill up --host $(HOST)

# Test files go to TEST_WORKERS processes (pytest-xdist), each file whole to one of them, so a
# module's fixtures are built once; 0 runs them in this process. Three on 2 cores: a worker
# waiting on a server or a child process leaves its core to the others (the suite used 1.67
# of 2 cores with two workers, 1.83 with three: 804 s -> 730 s).
TEST_WORKERS ?= 3

test: setup labelstudio  ## the whole test suite with coverage (against Label Studio itself too), TEST_WORKERS files at a time
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --cov=quill --cov-report=term:skip-covered --durations=15

lint: setup  ## ruff, formatting check, shellcheck and mypy through pre-commit
	$(BIN)/pre-commit run --all-files

format: setup
	$(BIN)/ruff format src tests && $(BIN)/ruff check --fix src tests

lock:  ## re-resolve requirements.lock from pyproject.toml in a scratch venv
	rm -rf /tmp/quill-lock && $(PYTHON) -m venv /tmp/quill-lock
	/tmp/quill-lock/bin/pip install -q --upgrade pip
	/tmp/quill-lock/bin/pip install -q -e '.[app,train,dev,peers]'
	/tmp/quill-lock/bin/pip freeze --exclude-editable | grep -v '^quill' > requirements.lock

peers: setup  ## benchmark peers: Tesseract (Debian) and RapidOCR (PyPI)
	./scripts/install_peers.sh

LS_VENV := .cache/labelstudio-venv
$(LS_VENV)/.installed:
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install -q --upgrade pip
	$(LS_VENV)/bin/pip install -q 'label-studio==1.23.2'
	touch $@

# Its schema, applied once to an empty database that each new data folder starts from.
$(LS_VENV)/quill-empty-database.sqlite3: $(LS_VENV)/.installed | $(BIN)/.installed
	$(BIN)/python -c 'import pathlib, quill.annotation.server as s; s.build_empty_database(pathlib.Path("$(LS_VENV)"))'

labelstudio: $(LS_VENV)/quill-empty-database.sqlite3  ## Label Studio in its own virtualenv (~1 GB) for `quill annotate serve`

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .coverage
