# Two entry points for a fresh machine with Python 3.11: `make demo` and `make test`.
# Each creates .venv on first use (torch pinned by constraints.txt to this machine's CPU build).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[test,extras]'
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/seas demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest
