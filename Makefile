# Two commands do all the set-up on a fresh Debian machine:
#   make run    create the virtual environment, install lokid, serve in the foreground
#   make test   install what the tests need (pip and Debian packages), lint, run the suite
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint format bench system-deps clean

$(STAMP): pyproject.toml
	bash scripts/bootstrap-python.sh $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/lokid serve

system-deps:
	bash scripts/install-system-deps.sh

test: $(STAMP) system-deps lint
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP) system-deps
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
