# Two commands a newcomer needs: `make demo` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-$(shell cat setup.cfg scripts/system-deps.sh | sha1sum | cut -c1-12)

.PHONY: demo test lint pytest bench clean system-deps

$(STAMP): setup.cfg pyproject.toml scripts/system-deps.sh
	scripts/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*; touch $@

system-deps:
	scripts/system-deps.sh

demo: $(STAMP)
	$(BIN)/python -m hoopctl.demo

lint: $(STAMP)
	$(BIN)/ruff check hoopctl tests benchmarks
	$(BIN)/ruff format --check hoopctl tests benchmarks

pytest: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest $(PYTEST_ARGS)

test: lint pytest

bench: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/scan.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
