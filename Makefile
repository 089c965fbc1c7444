# Two commands do all the set-up on a fresh Debian machine:
#   make run    create the virtual environment, install lokid, serve in the foreground
#   make test   install what the tests need (pip and Debian packages), lint, run the suite
# and to put lokid and lokictl on PATH (~/.local/bin, or PREFIX=...):
#   make install / make uninstall
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

PREFIX ?= $(HOME)/.local

.PHONY: run test lint format bench benchmarks reliability system-deps clean install uninstall

$(STAMP): pyproject.toml
	bash scripts/bootstrap-python.sh $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,mcp,postgres]'
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

# Regenerates BENCHMARKS.md and bench/plots/*.png (matplotlib: the `bench` extra, not `make test`).
benchmarks: $(STAMP) system-deps
	$(PY) -m pip install -q --disable-pip-version-check -e '.[bench]'
	$(PY) bench/make_benchmarks.py

# The reliability suite alone (fuzzing, load, crash, faults, security); also part of `make test`.
reliability: $(STAMP) system-deps
	$(PY) -m pytest -q tests/test_reliability_*.py

# lokid and lokictl in a private environment under $(PREFIX)/share/lokid, linked into
# $(PREFIX)/bin, with lokictl's man page and bash/zsh/fish completions (scripts/install.sh).
install:
	bash scripts/install.sh "$(PREFIX)"

uninstall:
	bash scripts/install.sh --uninstall "$(PREFIX)"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
