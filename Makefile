# Everything installs itself: `make render` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STACK  ?= dev
OUT    ?= out/$(STACK)

.PHONY: help venv tools scanner policy-venv render test lint bench golden clean FORCE
CHECKOV_VENV := .venv-checkov
POLICY_VENV  := .venv-policy
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Which interpreter builds the virtualenvs (3.11, 3.12 and 3.13 are supported: `make PYTHON=python3.13 test`).
PYTHON_VERSION := $(shell $(PYTHON) -c 'import platform; print(platform.python_implementation(), platform.python_version())' 2>/dev/null)

help:
	@echo "make render STACK=<stack> [OUT=dir] render a stack offline (no CLI, cluster or cloud account)"
	@echo "make test                             install what the tests need, lint, run every test"
	@echo "make bench                            time the program against its floor, every stack's render and make test"
	@echo "make golden                           rewrite the generated files (tests/golden/, policy/config.*.json, README graph and configuration reference)"

# A virtualenv belongs to the interpreter that made it: <venv>/.python records which one, and a different
# $(PYTHON) (another implementation or version, down to the patch release) starts the virtualenv over. The file is rewritten
# only when it changes, so an unchanged interpreter never triggers a reinstall.
%/.python: FORCE
	@test -n "$(PYTHON_VERSION)" || { echo "$(PYTHON) not found: set PYTHON to a Python 3.11-3.13 interpreter" >&2; exit 1; }
	@if [ "$$(cat $@ 2>/dev/null)" != "$(PYTHON_VERSION)" ]; then \
	  echo "Creating $* with $(PYTHON) ($(PYTHON_VERSION))"; \
	  rm -rf $*; $(PYTHON) -m venv $* && echo "$(PYTHON_VERSION)" > $@; \
	fi

# The first install downloads Pulumi, its providers' SDKs and the test tools (about a minute): pip's progress
# is shown then; later reinstalls (a changed pin) stay quiet.
PIP_QUIET = $(if $(wildcard $@),--quiet,)
define announce
	@$(if $(wildcard $@),true,echo "Installing $(1) into $(2) (first time, about a minute)")
endef

$(BIN)/.installed: pyproject.toml requirements.txt $(VENV)/.python
	$(call announce,the project with its pinned dependencies and test tools,$(VENV))
	$(BIN)/pip install $(PIP_QUIET) --disable-pip-version-check -e '.[test]'
	touch $@

venv: $(BIN)/.installed

render: venv
	$(BIN)/python -m infra render $(STACK) --out $(OUT)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# promtool and amtool check the generated alert rules and Alertmanager configuration (Debian packages).
tools:
	@command -v promtool >/dev/null && command -v amtool >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    prometheus prometheus-alertmanager >/dev/null; }

# checkov scans the rendered manifests; it lives in its own virtualenv because its pins clash with ours.
$(CHECKOV_VENV)/.installed: requirements-checkov.txt $(CHECKOV_VENV)/.python
	$(call announce,checkov,$(CHECKOV_VENV))
	$(CHECKOV_VENV)/bin/pip install $(PIP_QUIET) --disable-pip-version-check -r requirements-checkov.txt
	touch $@

scanner: $(CHECKOV_VENV)/.installed

# The policy pack runs in its own virtualenv too (pulumi-policy pins older grpcio/protobuf than pulumi). Pulumi starts
# the pack with the virtualenv policy/PulumiPolicy.yaml names (`../.venv-policy`, relative to policy/): this one.
$(POLICY_VENV)/.installed: policy/requirements.txt $(POLICY_VENV)/.python
	$(call announce,the policy pack's runtime,$(POLICY_VENV))
	$(POLICY_VENV)/bin/pip install $(PIP_QUIET) --disable-pip-version-check -r policy/requirements.txt
	touch $@

policy-venv: $(POLICY_VENV)/.installed

# One pytest worker per core (pytest-xdist); the longest tests start first (tests/conftest.py) and idle workers
# steal queued ones, so the suite ends close to its longest test.
PYTEST_PARALLEL ?= -n auto --dist worksteal

test: lint tools scanner policy-venv
	CHECKOV=$(CURDIR)/$(CHECKOV_VENV)/bin/checkov $(BIN)/pytest $(PYTEST_PARALLEL)

bench: venv
	$(BIN)/python -m infra bench --tests

# Every stack (one per Pulumi.<stack>.yaml): after an intended change or a new stack; review the diff.
golden: venv
	$(BIN)/python -m infra golden --write
	$(BIN)/python -m infra policy-config --write

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(POLICY_VENV) out .pytest_cache .ruff_cache
