# Entry points for a fresh machine with Python 3.11: `make install` (seas in .venv/bin, nothing run),
# `make demo` and `make test`. Each creates .venv on first use (torch pinned by constraints.txt to
# this machine's CPU build).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: install demo test

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[test,extras]'
	touch $(STAMP)

install: $(STAMP)
	@echo "seas is installed as $(VENV)/bin/seas: run it by that path, or 'source $(VENV)/bin/activate' first"
	@echo "then: seas demo --quick (a minute), seas demo (7 to 10 minutes on a 2-core CPU), seas --help"

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/seas demo
	@echo "seas is $(VENV)/bin/seas ('source $(VENV)/bin/activate' puts it on your PATH)"

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest
