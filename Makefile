# Two commands a new user needs: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test lint bench clean

demo: $(STAMP)
	$(BIN)/kairos demo

test: $(STAMP)
	./scripts/system-packages.sh chromium
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	./scripts/system-packages.sh nginx wrk
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/passthrough.py
	$(BIN)/python bench/bench_context.py
	$(BIN)/python bench/bench_rewrite.py

$(STAMP): pyproject.toml
	./scripts/ensure-venv.sh "$(PYTHON)" "$(VENV)"
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
