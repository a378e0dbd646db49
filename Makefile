# The one entry point for set-up, tests, demo, benchmarks and docs.
# Needs nothing but python3: `make install` builds .venv from scratch.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PKGS   := packages/crdt-state packages/pubsub-zmq packages/tracker-zmq
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install lint typecheck pytest test check-install docs docs-build bench demo clean
.PHONY: soak soak-netns fuzz

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(STAMP) ## Create .venv with the three packages (editable) and the dev tools

$(STAMP): requirements-dev.txt $(foreach p,$(PKGS),$(p)/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt \
		-e 'packages/crdt-state[testing]' -e packages/pubsub-zmq -e packages/tracker-zmq
	touch $@

lint: $(STAMP) ## ruff: lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy --strict on the packages
	$(BIN)/mypy packages/crdt-state/src/crdt_state packages/pubsub-zmq/src/pubsub_zmq \
		packages/tracker-zmq/src/tracker_zmq

.PHONY: js-deps
JS_STAMP := tests/js/node_modules/.installed

js-deps: $(JS_STAMP) ## Install the phoenix npm client the interop test runs (npm ci in tests/js)

$(JS_STAMP): tests/js/package-lock.json tests/js/package.json
	npm ci --prefix tests/js --no-audit --no-fund
	touch $@

pytest: $(STAMP) $(JS_STAMP) ## Run every test (package tests and real-process cluster tests)
	$(BIN)/pytest -q

check-install: $(STAMP) ## Install each package alone into a fresh virtualenv and import it
	$(BIN)/python scripts/check_install.py

docs-build: $(STAMP) ## Build the documentation site strictly
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: lint typecheck pytest check-install docs-build ## Everything CI runs: lint, types, tests, installs, docs

docs: $(STAMP) ## Serve the docs on http://127.0.0.1:8000
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve -a 127.0.0.1:8000

bench: $(STAMP) ## Benchmarks: print the figures tables (not a test)
	$(BIN)/python bench/bench_crdt_state.py
	$(BIN)/python bench/bench_pubsub.py
	$(BIN)/python bench/bench_tracker.py

soak: $(STAMP) ## Soak: 5 nodes, churn, kills, pauses, cut-offs; exact end checks (not a test)
	$(BIN)/python scripts/soak.py

soak-netns: $(STAMP) ## The soak with each node in a network namespace and real link cuts (root)
	$(BIN)/python scripts/soak.py --netns

fuzz: $(STAMP) ## Long fuzzing of every network decoder; prints inputs, rejections, crashes
	$(BIN)/python scripts/fuzz.py

demo: $(STAMP) ## The demo: a 3-node cluster on loopback; one node crashes and rejoins
	$(BIN)/python scripts/demo.py

clean: ## Remove the virtualenv and build output
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache .hypothesis .install-check tests/js/node_modules
