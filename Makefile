# Quill's setup and everyday commands. Every target is idempotent: run it twice, nothing changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1

.PHONY: help setup system-deps up demo test lint format lock clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

system-deps:  ## Debian packages (browser, fonts, corpus) and npm fonts the project needs
	./scripts/install_fonts.sh

setup: $(BIN)/.installed system-deps  ## create .venv with the locked dependencies

up: setup  ## the main job: web app + REST API with the shipped model on localhost
	$(BIN)/quill up --host $(HOST)

test: setup  ## the whole test suite with coverage
	$(BIN)/pytest --cov=quill --cov-report=term:skip-covered

lint: setup  ## ruff, formatting check and shellcheck through pre-commit
	$(BIN)/pre-commit run --all-files

format: setup
	$(BIN)/ruff format src tests && $(BIN)/ruff check --fix src tests

lock:  ## re-resolve requirements.lock from pyproject.toml in a scratch venv
	rm -rf /tmp/quill-lock && $(PYTHON) -m venv /tmp/quill-lock
	/tmp/quill-lock/bin/pip install -q --upgrade pip
	/tmp/quill-lock/bin/pip install -q -e '.[app,train,dev]'
	/tmp/quill-lock/bin/pip freeze --exclude-editable | grep -v '^quill' > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .coverage
