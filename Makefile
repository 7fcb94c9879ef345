# Everything installs itself: `make render` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STACK  ?= dev
OUT    ?= out/$(STACK)

.PHONY: help venv render test lint bench clean

help:
	@echo "make render STACK=dev|prod [OUT=dir]  render a stack offline (no CLI, cluster or cloud account)"
	@echo "make test                             install what the tests need, lint, run every test"
	@echo "make bench                            time and measure the offline render of every stack"

$(BIN)/.installed: pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

venv: $(BIN)/.installed

render: venv
	$(BIN)/python -m infra render $(STACK) --out $(OUT)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest

bench: venv
	$(BIN)/python -m infra bench

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
