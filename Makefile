# The README's commands. `make demo` and `make test` set up everything they need first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-fast system-deps lint import-graph bench soak clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

demo: setup
	$(BIN)/vitalwatch demo $(ARGS)

# redis-server, mosquitto, chromium + chromedriver, pdftotext: the real parts the tests run.
system-deps:
	bash scripts/install-system-deps.sh

test: setup system-deps
	$(BIN)/pytest $(PYTEST_ARGS)

# ruff, mypy, the layering contracts (pyproject.toml) and the import graph in docs/architecture.md
lint: setup
	$(BIN)/ruff check monitor devices dashboard tests benchmarks scripts
	$(BIN)/mypy monitor devices dashboard scripts/import_graph.py
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/python scripts/import_graph.py --check

# redraw the package picture in docs/architecture.md after an import between packages changed
import-graph: setup
	$(BIN)/python scripts/import_graph.py

bench: setup
	for b in benchmarks/*.py; do case $$b in *soak.py) continue;; esac; echo "== $$b"; $(BIN)/python $$b || exit 1; done

# the whole system at 20 rooms for 30 min with faults injected periodically (docs/reliability.md)
soak: setup
	nice $(BIN)/python benchmarks/soak.py $(ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis
